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
        validateSecretFiles(context)
        validateChartRepositories(at: spec, context)
        validateBundledFields(at: spec, context)
    }

    /// Fields of the HelmChart API that the pinned K3s's helm-controller does not serve: its
    /// CRD would prune them (the password would never reach the chart).
    private func validateBundledFields(at spec: FieldPath, _ context: DecodeContext) {
        guard let k3s = self.spec.k3s, BundledHelmController.servesValuesSecrets(k3s.version) == false else { return }
        for (i, release) in (self.spec.helmReleases ?? []).enumerated() where !release.valuesSecrets.isEmpty {
            let bundled = BundledHelmController.version(for: k3s.version).map { " bundles helm-controller \($0), which" } ?? "'s helm-controller"
            let first = BundledHelmController.firstReleaseWithValuesSecrets(like: k3s.version).map { "; the first \(k3s.version.major).\(k3s.version.minor) release with it is \($0)" } ?? ""
            context.fail(.invalidValue, "valuesSecrets needs HelmChart spec.valuesSecrets (helm-controller v0.16.7 or later): K3s \(k3s.version)\(bundled) "
                         + "does not have it, and the API server would refuse or drop it\(first); raise spec.k3s.version", path: (spec + "helmReleases").appending(index: i) + "valuesSecrets")
        }
    }

    /// Files that belong to other systems' credentials: naming one as a secret file would copy
    /// it into a Kubernetes Secret or a config. A committer is trusted with the node's desired
    /// state, not with a read of root's keys into places pods and peers can reach.
    static let foreignCredentialPaths = ["/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-", "/etc/nodeagent/agent.yaml"]
    static let foreignCredentialDirectories = ["/etc/ssh/", "/etc/rancher/", "/var/lib/rancher/", "/root/.ssh/", "/root/.kube/", "/var/lib/nodeagent/",
                                               "/proc/", "/sys/", "/dev/"]

    /// Every `…File` field that names a secret, with where it is.
    public var secretFiles: [(path: FieldPath, file: AbsolutePath)] {
        let spec = FieldPath.root + "spec"
        var out: [(FieldPath, AbsolutePath)] = []
        if let wg = self.spec.wireguard {
            out.append((spec + "wireguard" + "privateKeyFile", wg.privateKeyFile))
            for (i, peer) in wg.peers.enumerated() {
                if let f = peer.presharedKeyFile { out.append(((spec + "wireguard" + "peers").appending(index: i) + "presharedKeyFile", f)) }
            }
        }
        for (i, release) in (self.spec.helmReleases ?? []).enumerated() {
            for (j, item) in release.valuesSecrets.enumerated() {
                out.append((((spec + "helmReleases").appending(index: i) + "valuesSecrets").appending(index: j) + "file", item.file))
            }
        }
        if let app = self.spec.argocd?.appOfApps {
            if let f = app.passwordFile { out.append((spec + "argocd" + "appOfApps" + "passwordFile", f)) }
            if let f = app.sshPrivateKeyFile { out.append((spec + "argocd" + "appOfApps" + "sshPrivateKeyFile", f)) }
        }
        if let f = self.spec.alerting?.email?.passwordFile { out.append((spec + "alerting" + "email" + "passwordFile", f)) }
        if let f = self.spec.backups?.postgres?.connection?.passwordFile {
            out.append((spec + "backups" + "postgres" + "connection" + "passwordFile", f))
        }
        if let f = self.spec.backups?.providerSnapshot?.credentialsFile {
            out.append((spec + "backups" + "providerSnapshot" + "credentialsFile", f))
        }
        for (field, file) in self.spec.backups?.offsite?.secretFiles ?? [] { out.append((spec + "backups" + "offsite" + field, file)) }
        // The sections registered with a type of their own say theirs (`status`, `heartbeat`).
        for (key, section) in self.spec.sections.sorted(by: { $0.key < $1.key }) {
            for (field, file) in section.value.secretFiles { out.append((spec + key + field, file)) }
        }
        return out
    }

    private func validateSecretFiles(_ context: DecodeContext) {
        for (path, file) in secretFiles {
            let v = file.value
            if Self.foreignCredentialPaths.contains(v) || Self.foreignCredentialDirectories.contains(where: { v.hasPrefix($0) }) {
                context.fail(.invalidValue, "\(v) belongs to another system's credentials (SSH host keys, K3s, /etc/shadow, nodeagent's own state); "
                             + "write the secret to its own file, such as /etc/nodeagent/secrets/NAME, mode 0600", path: path)
            }
        }
    }

    /// A chart runs with cluster-admin rights: fetched over plain HTTP, anyone on the path could
    /// swap it. http:// is accepted only for a repository on the node itself (a local mirror).
    private func validateChartRepositories(at spec: FieldPath, _ context: DecodeContext) {
        for (i, release) in (self.spec.helmReleases ?? []).enumerated() {
            guard let repo = release.repo, repo.scheme == "http", !repo.isLoopback else { continue }
            context.fail(.invalidValue, "\(repo) is plain http://: anyone on the path could swap the chart, which runs as cluster-admin; "
                         + "use https:// (http:// is accepted only for a mirror on the node itself: localhost, 127.0.0.0/8 or [::1])",
                         path: (spec + "helmReleases").appending(index: i) + "repo")
        }
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
        if let wg = spec.wireguard, fw.publicInterfaces.contains(wg.interface) {
            context.fail(.conflict, "the public interface cannot be the WireGuard interface \(wg.interface)",
                         path: fw.publicInterfaces.count == 1 ? path + "publicInterface" : path + "publicInterfaces")
        }
        if fw.publicInterfaces.count > 1 {
            Self.reportDuplicates(fw.publicInterfaces.map(\.name), at: path + "publicInterfaces", noun: "interface", context)
        }
    }

    /// The pod and service networks (K3s's defaults when spec.k3s is absent: a cluster may
    /// still come later, and a peer holding 10.42.0.0/16 would then pass as a pod).
    var clusterNetworks: [IPNetwork] {
        if let k3s = spec.k3s { return [k3s.clusterCIDR, k3s.serviceCIDR] }
        return [try! IPNetwork(parsing: "10.42.0.0/16"), try! IPNetwork(parsing: "10.43.0.0/16")]
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
                for cidr in clusterNetworks where network.overlaps(cidr) {
                    context.fail(.conflict, "\(network) overlaps the cluster network \(cidr), whose traffic the firewall trusts as pods'; "
                                 + "a peer must not be routed addresses that the node takes for its own pods and services",
                                 path: (peers.appending(index: i) + "allowedIPs").appending(index: j))
                }
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
        validateDependencies(releases, at: spec + "helmReleases", context)
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

    /// `dependsOn`: declared names, not the release itself, no cycle (each reported once, at
    /// the entry that closes it).
    private func validateDependencies(_ releases: [HelmRelease], at list: FieldPath, _ context: DecodeContext) {
        let names = releases.map(\.name.value)
        var ok = true
        for (i, release) in releases.enumerated() {
            for (j, dep) in release.dependsOn.enumerated() {
                let at = (list.appending(index: i) + "dependsOn").appending(index: j)
                if dep == release.name {
                    context.fail(.invalidValue, "release \(release.name) cannot depend on itself", path: at)
                    ok = false
                } else if !names.contains(dep.value) {
                    let guess = Suggestion.closest(to: dep.value, in: names).map { " (did you mean \"\($0)\"?)" } ?? ""
                    context.fail(.invalidValue, "\"\(dep)\" is not a release in spec.helmReleases\(guess)", path: at)
                    ok = false
                }
            }
        }
        guard ok else { return }
        // Depth-first search; a back edge is a cycle.
        var state = [Int](repeating: 0, count: releases.count)   // 0 new, 1 on the path, 2 done
        var path: [Int] = []
        func visit(_ i: Int) -> Bool {
            state[i] = 1
            path.append(i)
            for (j, dep) in releases[i].dependsOn.enumerated() {
                guard let k = names.firstIndex(of: dep.value) else { continue }
                if state[k] == 1 {
                    let cycle = (path[path.firstIndex(of: k)!...].map { names[$0] } + [names[k]]).joined(separator: " → ")
                    context.fail(.conflict, "dependsOn makes a cycle: \(cycle)", path: (list.appending(index: i) + "dependsOn").appending(index: j))
                    return false
                }
                if state[k] == 0, !visit(k) { return false }
            }
            state[i] = 2
            path.removeLast()
            return true
        }
        for i in releases.indices where state[i] == 0 {
            path = []
            if !visit(i) { return }
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
        if let fw = spec.firewall, let i = fw.public.tcp.firstIndex(of: status.listen.port) {
            context.fail(.conflict, "the status port \(status.listen.port) is for WireGuard peers only; remove it from firewall.public.tcp",
                         path: (FieldPath.root + "spec" + "firewall" + "public" + "tcp").appending(index: i))
        }
        guard let ip = status.listen.ip else { return }
        if ip.isUnspecified {
            context.fail(.invalidValue, "\(ip) listens on every address, the public one included; use the WireGuard address",
                         path: path + "listen")
        } else if let wg = spec.wireguard, !ip.isLoopback, !wg.address.contains(ip) {
            context.fail(.invalidValue, "\(ip) is outside the WireGuard subnet \(wg.address); the status endpoint is for the VPN only",
                         path: path + "listen")
        }
    }

    /// Values reach other programs' input (sysctl.d, sshd, wg-quick, nft, a kubelet's
    /// arguments): a control character there could start a new line of that input. Refused in
    /// every scalar except Helm chart values, which reach the chart as YAML, encoded.
    static func refuseControlCharacters(_ node: YAMLNode, path: FieldPath, _ context: DecodeContext) {
        switch node.content {
        case .scalar(let scalar):
            if let bad = scalar.text.unicodeScalars.first(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) || $0 == "\u{2028}" || $0 == "\u{2029}" }) {
                let hex = String(bad.value, radix: 16, uppercase: true)
                context.fail(.invalidValue, "a control character (U+\(String(repeating: "0", count: max(0, 4 - hex.count)) + hex)) is not allowed here: "
                             + "this value is written into another program's input", at: node.mark, path: path)
            }
        case .sequence(let items):
            for (i, item) in items.enumerated() { refuseControlCharacters(item, path: path.appending(index: i), context) }
        case .mapping(let pairs):
            for pair in pairs {
                let key = pair.key.scalar?.text ?? ""
                if key == "values", path.description.contains("helmReleases") { continue }
                refuseControlCharacters(pair.key, path: path.appending(key), context)
                refuseControlCharacters(pair.value, path: path.appending(key), context)
            }
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
        Platform.refuseControlCharacters(node, path: .root, context)
        if !context.diagnostics.isEmpty { throw DiagnosticsError(context.sortedDiagnostics) }
        return platform
    }

    /// Reads and loads a file from disk.
    public static func load(path: String) throws(DiagnosticsError) -> Platform {
        let bytes = try FileReading.read(path)
        return try load(bytes, file: path)
    }
}
