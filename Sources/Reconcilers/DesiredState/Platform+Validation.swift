public import YAML

extension Platform {
    /// Checks that span fields and sections, after every field has parsed on its own. Each
    /// problem is reported at the recorded position of the field it names.
    func validateRelations(_ context: DecodeContext) {
        let spec = FieldPath.root + "spec"
        if let fw = self.spec.firewall { validateFirewall(fw, at: spec + "firewall", context) }
        if let wg = self.spec.wireguard { validateWireGuard(wg, at: spec + "wireguard", context) }
        validateReferences(at: spec, context)
        validateNetworks(at: spec, context)
        if let status = self.spec.status { validateStatus(status, at: spec + "status", context) }
    }


    private func validateFirewall(_ fw: FirewallSpec, at path: FieldPath, _ context: DecodeContext) {
        let lists: [(String, String, [Port])] = [("public", "tcp", fw.public.tcp), ("public", "udp", fw.public.udp),
                                                 ("vpnOnly", "tcp", fw.vpnOnly.tcp), ("vpnOnly", "udp", fw.vpnOnly.udp)]
        for (group, proto, ports) in lists {
            Self.reportDuplicates(ports.map(\.value), at: path + group + proto, noun: "port", context)
        }
        for proto in ["tcp", "udp"] {
            let open = proto == "tcp" ? fw.public.tcp : fw.public.udp
            let vpn = proto == "tcp" ? fw.vpnOnly.tcp : fw.vpnOnly.udp
            for (i, port) in vpn.enumerated() where open.contains(port) {
                context.fail(.conflict, "\(proto) port \(port) is both public and vpnOnly; list it in one of them",
                             path: (path + "vpnOnly" + proto).appending(index: i))
            }
        }
        // Lockout protection: a desired state that would close the way in is refused.
        let sshPort = spec.os?.ssh?.port ?? Port(22)!
        if !fw.public.tcp.contains(sshPort) {
            context.fail(.conflict, "the SSH port \(sshPort) must stay in firewall.public.tcp: closing it would lock the operator out",
                         path: path + "public" + "tcp")
        }
        if let wg = spec.wireguard, !fw.public.udp.contains(wg.listenPort) {
            context.fail(.conflict, "the WireGuard port \(wg.listenPort) must stay in firewall.public.udp: closing it would cut off the VPN",
                         path: path + "public" + "udp")
        }
        if let wg = spec.wireguard, wg.interface == fw.publicInterface {
            context.fail(.conflict, "the public interface cannot be the WireGuard interface \(wg.interface)", path: path + "publicInterface")
        }
    }

    private func validateWireGuard(_ wg: WireGuardSpec, at path: FieldPath, _ context: DecodeContext) {
        let peers = path + "peers"
        Self.reportDuplicates(wg.peers.map(\.name.value), at: peers, field: "name", noun: "peer name", context)
        Self.reportDuplicates(wg.peers.map(\.publicKey.base64), at: peers, field: "publicKey", noun: "public key", context)
        // Overlaps by a sweep over the networks sorted by first address: O(n log n), as a node
        // may well have a thousand peers. Two CIDRs overlap exactly when one contains the other.
        struct Entry {
            var network: IPNetwork
            var first: [UInt8], last: [UInt8]
            var peer: Int, index: Int, order: Int
        }
        var entries: [Entry] = []
        for (i, peer) in wg.peers.enumerated() {
            for (j, network) in peer.allowedIPs.enumerated() {
                let (first, last) = network.range
                entries.append(Entry(network: network, first: first, last: last, peer: i, index: j, order: entries.count))
                if network.contains(wg.address.address) {
                    context.fail(.conflict, "\(network) contains the node's own WireGuard address \(wg.address.address)",
                                 path: (peers.appending(index: i) + "allowedIPs").appending(index: j))
                }
            }
        }
        entries.sort { $0.first.count != $1.first.count ? $0.first.count < $1.first.count : $0.first.lexicographicallyPrecedes($1.first) }
        var widest: Entry?
        for e in entries {
            if let w = widest, w.first.count == e.first.count, !w.last.lexicographicallyPrecedes(e.first) {
                let (later, earlier) = e.order > w.order ? (e, w) : (w, e)
                let whose = later.peer == earlier.peer ? "another entry of this peer" : "peer \"\(wg.peers[earlier.peer].name)\""
                context.fail(.conflict, "\(later.network) overlaps \(earlier.network) of \(whose); WireGuard routes each address to one peer only",
                             path: (peers.appending(index: later.peer) + "allowedIPs").appending(index: later.index))
            }
            if widest == nil || widest!.first.count != e.first.count || widest!.last.lexicographicallyPrecedes(e.last) {
                widest = e
            }
        }
    }

    private func validateReferences(at spec: FieldPath, _ context: DecodeContext) {
        let releases = self.spec.helmReleases ?? []
        Self.reportDuplicates(releases.map(\.name.value), at: spec + "helmReleases", field: "name", noun: "release name", context)
        for (i, release) in releases.enumerated() {
            Self.reportDuplicates(release.valuesSecrets.map(\.key), at: (spec + "helmReleases").appending(index: i) + "valuesSecrets",
                                  field: "key", noun: "values key", context)
        }
        let names = releases.map(\.name.value)
        func requireRelease(_ name: DNSLabel, at path: FieldPath, for what: String) {
            guard !names.contains(name.value) else { return }
            let guess = Suggestion.closest(to: name.value, in: names).map { " (did you mean \"\($0)\"?)" } ?? ""
            context.fail(.invalidValue, "\(what) needs the Helm release \"\(name)\", which spec.helmReleases does not declare\(guess)", path: path)
        }
        if let argo = self.spec.argocd {
            requireRelease(argo.release, at: spec + "argocd" + "release", for: "argocd")
        }
        if let alerting = self.spec.alerting {
            requireRelease(alerting.release, at: spec + "alerting" + "release", for: "alerting")
        }
        if let pg = self.spec.backups?.postgres {
            if let release = pg.release {
                requireRelease(release, at: spec + "backups" + "postgres" + "release", for: "backups.postgres")
            }
            Self.reportDuplicates(pg.databases.map(\.value), at: spec + "backups" + "postgres" + "databases", noun: "database", context)
        }
    }

    private func validateNetworks(at spec: FieldPath, _ context: DecodeContext) {
        guard let k3s = self.spec.k3s else { return }
        if k3s.clusterCIDR.overlaps(k3s.serviceCIDR) {
            context.fail(.conflict, "serviceCIDR \(k3s.serviceCIDR) overlaps clusterCIDR \(k3s.clusterCIDR)", path: spec + "k3s" + "serviceCIDR")
        }
        if let wg = self.spec.wireguard {
            let vpn = try? IPNetwork(parsing: "\(Self.network(of: wg.address))")
            for (name, cidr) in [("clusterCIDR", k3s.clusterCIDR), ("serviceCIDR", k3s.serviceCIDR)] {
                if let vpn, vpn.overlaps(cidr) {
                    context.fail(.conflict, "the WireGuard subnet \(vpn) overlaps k3s.\(name) \(cidr)", path: spec + "wireguard" + "address")
                }
            }
        }
    }

    private func validateStatus(_ status: StatusSpec, at path: FieldPath, _ context: DecodeContext) {
        guard let ip = status.listen.ip else { return }
        let isLoopback = ip.isIPv4 ? ip.bytes[0] == 127 : ip.bytes == [UInt8](repeating: 0, count: 15) + [1]
        if ip.bytes.allSatisfy({ $0 == 0 }) {
            context.fail(.invalidValue, "\(ip) listens on every address, the public one included; use the WireGuard address",
                         path: path + "listen")
        } else if let wg = spec.wireguard, !isLoopback, !wg.address.contains(ip) {
            context.fail(.invalidValue, "\(ip) is outside the WireGuard subnet \(wg.address); the status endpoint is for the VPN only",
                         path: path + "listen")
        }
    }

    /// The network of an interface address: `10.8.0.1/24` → `10.8.0.0/24`.
    public static func network(of a: InterfaceAddress) -> String {
        var bytes = a.address.bytes
        for i in bytes.indices {
            let keep = max(0, min(8, a.prefix - i * 8))
            bytes[i] &= UInt8(truncatingIfNeeded: 0xFF << (8 - keep))
        }
        var ip = a.address
        ip.bytes = bytes
        return "\(ip)/\(a.prefix)"
    }

    /// Reports each element equal to an earlier one, at the later element.
    static func reportDuplicates<T: Hashable>(_ values: [T], at list: FieldPath, field: String? = nil, noun: String,
                                              _ context: DecodeContext) {
        var first: [T: Int] = [:]
        for (i, v) in values.enumerated() {
            let at = field.map { list.appending(index: i) + $0 } ?? list.appending(index: i)
            if let j = first[v] {
                context.fail(.conflict, "duplicate \(noun) \(v) (also at \(list.appending(index: j)))", path: at)
            } else {
                first[v] = i
            }
        }
    }
}

/// Reads `platform.yaml`: parse, decode, validate. Nothing is returned unless all of it is valid.
public enum DesiredStateLoader {
    /// - Parameters:
    ///   - bytes: the file's content.
    ///   - file: the name diagnostics print.
    /// - Returns: the typed desired state.
    /// - Throws: `DiagnosticsError` with every problem found, in file order.
    public static func load(_ bytes: [UInt8], file: String) throws(DiagnosticsError) -> Platform {
        let node = try YAMLParser().parseDocument(bytes, file: file)
        let context = DecodeContext(file: file, root: node)
        let platform: Platform
        do {
            platform = try Platform(yaml: node, path: .root, context: context)
        } catch {
            throw DiagnosticsError(context.sortedDiagnostics)
        }
        platform.validateRelations(context)
        if !context.diagnostics.isEmpty { throw DiagnosticsError(context.sortedDiagnostics) }
        return platform
    }

    /// Reads and loads a file from disk.
    public static func load(path: String) throws(DiagnosticsError) -> Platform {
        let bytes = try FileReading.read(path)
        return try load(bytes, file: path)
    }
}
