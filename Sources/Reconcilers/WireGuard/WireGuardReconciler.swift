/// Brings up the WireGuard interface of `spec.wireguard` and keeps its peers as declared.
///
/// Peers are synchronised with `wg syncconf`, which adds, removes and changes peers one by
/// one: the sessions of untouched peers survive any change. The private key is generated on
/// the node when missing (mode 0600), read only to hand it to `wg` on stdin, and never printed.
/// `/etc/wireguard/IFACE.conf` (0600) is written too, so `wg-quick up IFACE` can bring the VPN
/// up even when nodeagent is down; it points at the key file instead of containing the key.
public struct WireGuardReconciler: Reconciler {
    public struct Observed: Sendable {
        public var privateKey: [UInt8]?
        public var link: WireGuardLink
        public var device: WireGuardDevice?
        public var configFile: [UInt8]?
        public var presharedKeys: [String: String]
    }

    public static let name = ReconcilerName.wireguard
    public static let dependencies: [ReconcilerName] = []
    public var owns: [OwnedResource] {
        [.networkInterface("wireguard")]
    }

    let host: Host

    public init(host: Host) {
        self.host = host
    }

    public func desired(from platform: Platform) -> WireGuardSpec? { platform.spec.wireguard }

    /// A key file: a regular root-owned file, mode 0600, never through a link.
    private func secret(_ file: AbsolutePath, for what: String) throws -> [UInt8]? {
        do {
            return try host.files.readSecret(file.value, limit: SecretSource.limit)
        } catch {
            throw SecretSource.refusal(error, path: file, what: what)
        }
    }

    static func configPath(_ spec: WireGuardSpec) -> String { "/etc/wireguard/\(spec.interface.name).conf" }

    public func observe(_ desired: WireGuardSpec) async throws -> Observed {
        let iface = desired.interface.name
        let key = try secret(desired.privateKeyFile, for: "wireguard.privateKeyFile")
        let addr = try await host.commands.run(Command("ip", ["-j", "addr", "show", "dev", iface]))
        let link = addr.succeeded ? IPAddrJSON.link(from: addr.stdout) : .absent
        var device: WireGuardDevice?
        if link.exists {
            // An interface whose state cannot be read is not changed on a guess.
            let dump = try await host.commands.run(Command("wg", ["show", iface, "dump"]))
            guard dump.succeeded else {
                throw ReconcileError(.failed, reason: "WireGuardUnreadable", "wg show \(iface) dump: \(dump.ending)\(dump.stderr.isEmpty ? "" : ": " + dump.stderr)")
            }
            guard let parsed = WireGuardDevice.parse(dump: dump.stdout) else {
                throw ReconcileError(.failed, reason: "WireGuardUnreadable",
                                     "wg show \(iface) dump printed something that is not a device dump (\(dump.stdout.utf8.count) bytes)")
            }
            device = parsed
        }
        var psks: [String: String] = [:]
        for peer in desired.peers {
            if let file = peer.presharedKeyFile {
                guard let bytes = try secret(file, for: "peer \(peer.name) presharedKeyFile") else {
                    throw ReconcileError(.stalled, reason: "PresharedKeyMissing", "peer \(peer.name): \(file) does not exist")
                }
                psks[peer.publicKey.base64] = try Self.key(bytes, file: file.value)
            }
        }
        return Observed(privateKey: key, link: link, device: device,
                        configFile: try host.files.read(Self.configPath(desired)), presharedKeys: psks)
    }

    public func plan(_ desired: WireGuardSpec, _ observed: Observed) throws -> [Change] {
        let iface = desired.interface.name
        var changes: [Change] = []
        if observed.privateKey == nil {
            changes.append(Change(.create, "file \(desired.privateKeyFile)", detail: "(a new private key, mode 0600)", operation: .interface(.generateKey(file: desired.privateKeyFile.value))))
        }
        if !observed.link.exists {
            changes.append(Change(.create, "wireguard interface \(iface)", operation: .interface(.createLink(iface))))
        }
        let wanted = [desired.address.description]
        if Set(observed.link.addresses) != Set(wanted) {
            changes.append(Change(observed.link.addresses.isEmpty ? .create : .update, "interface \(iface) address",
                                  detail: observed.link.addresses.isEmpty ? wanted[0] : "\(observed.link.addresses.joined(separator: ", ")) → \(wanted[0])",
                                  operation: .interface(.setAddress(interface: iface, address: wanted[0]))))
        }
        if let mtu = desired.mtu, observed.link.mtu != mtu {
            changes.append(Change(.update, "interface \(iface) mtu", detail: "\(observed.link.mtu.map(String.init) ?? "none") → \(mtu)", operation: .interface(.setMTU(interface: iface, mtu: mtu))))
        }
        if !observed.link.up {
            changes.append(Change(.update, "interface \(iface) up", operation: .interface(.bringUp(iface))))
        }
        changes += planDevice(desired, observed)
        let config = Array(WireGuardConfig.server(desired).utf8)
        if observed.configFile != config {
            let path = Self.configPath(desired)
            changes.append(Change(observed.configFile == nil ? .create : .update, "file \(path)",
                                  operation: .writeFile(path: path, before: observed.configFile, after: config, mode: 0o600)))
        }
        return changes
    }

    /// The `wg` part: key, port and peers, each difference one change; all applied by one
    /// `wg syncconf`.
    private func planDevice(_ desired: WireGuardSpec, _ observed: Observed) -> [Change] {
        let iface = desired.interface.name
        let sync = Change.Operation.interface(.syncDevice(iface))
        var changes: [Change] = []
        let device = observed.device ?? WireGuardDevice(publicKey: nil, listenPort: nil, peers: [])
        let fileKey = observed.privateKey.map { String(decoding: $0, as: UTF8.self).trimmingNewlines }
        if fileKey == nil || device.privateKeyMatches != fileKey {
            changes.append(Change(.update, "wireguard \(iface) private key", detail: "(from \(desired.privateKeyFile))", operation: sync))
        }
        if device.listenPort != Int(desired.listenPort.value) {
            changes.append(Change(.update, "wireguard \(iface) listen port", detail: "\(device.listenPort.map(String.init) ?? "none") → \(desired.listenPort)", operation: sync))
        }
        let live = Dictionary(device.peers.map { ($0.publicKey, $0) }, uniquingKeysWith: { a, _ in a })
        for peer in desired.peers {
            let ips = peer.allowedIPs.map(\.description)
            guard let current = live[peer.publicKey.base64] else {
                changes.append(Change(.create, "wireguard peer \(peer.name)", detail: ips.joined(separator: ", "), operation: sync))
                continue
            }
            var differences: [String] = []
            if Set(current.allowedIPs) != Set(ips) { differences.append("allowed IPs \(current.allowedIPs.joined(separator: ", ")) → \(ips.joined(separator: ", "))") }
            if current.persistentKeepalive != peer.persistentKeepalive.flatMap({ $0 == 0 ? nil : $0 }) {
                differences.append("keepalive \(current.persistentKeepalive.map(String.init) ?? "off") → \(peer.persistentKeepalive.map(String.init) ?? "off")")
            }
            if current.presharedKey != observed.presharedKeys[peer.publicKey.base64] { differences.append("preshared key") }
            if !differences.isEmpty {
                changes.append(Change(.update, "wireguard peer \(peer.name)", detail: differences.joined(separator: "; "), operation: sync))
            }
        }
        let declared = Set(desired.peers.map(\.publicKey.base64))
        for peer in device.peers where !declared.contains(peer.publicKey) {
            changes.append(Change(.delete, "wireguard peer \(peer.publicKey)", detail: peer.allowedIPs.joined(separator: ", "), operation: sync))
        }
        return changes
    }

    public func apply(_ changes: [Change], desired: WireGuardSpec) async throws {
        let iface = desired.interface.name
        let commands = host.commands
        let steps = changes.compactMap { if case .interface(let step) = $0.operation { return step } else { return nil } }
        func has(_ match: (Change.InterfaceStep) -> Bool) -> Bool { steps.contains(where: match) }
        if has({ if case .generateKey = $0 { return true } else { return false } }) {
            let key = try await commands.check(Command("wg", ["genkey"]))
            try host.files.makeDirectory(desired.privateKeyFile.directory, mode: 0o700)
            try host.files.write(desired.privateKeyFile.value, Array(key.stdout.utf8), mode: 0o600)
        }
        if has({ if case .createLink = $0 { return true } else { return false } }) {
            try await createLink(desired)
        }
        for case .setAddress(_, let address) in steps {
            try await commands.check(Command("ip", ["address", "flush", "dev", iface, "scope", "global"]))
            try await commands.check(Command("ip", ["address", "add", address, "dev", iface]))
        }
        for case .setMTU(_, let mtu) in steps {
            try await commands.check(Command("ip", ["link", "set", "dev", iface, "mtu", String(mtu)]))
        }
        if has({ if case .syncDevice = $0 { return true } else { return false } }) {
            guard let key = try secret(desired.privateKeyFile, for: "wireguard.privateKeyFile") else {
                throw ReconcileError(.failed, reason: "KeyMissing", "\(desired.privateKeyFile) disappeared")
            }
            let privateKey = try Self.key(key, file: desired.privateKeyFile.value)
            var psks: [String: String] = [:]
            for peer in desired.peers {
                guard let file = peer.presharedKeyFile else { continue }
                guard let bytes = try secret(file, for: "peer \(peer.name) presharedKeyFile") else {
                    throw ReconcileError(.stalled, reason: "PresharedKeyMissing", "peer \(peer.name): \(file) does not exist")
                }
                psks[peer.publicKey.base64] = try Self.key(bytes, file: file.value)
            }
            // The key goes to wg on stdin: never on a command line, never in a temp file; and
            // wg's complaints, which may quote a key, stay out of the error.
            let config = WireGuardConfig.sync(desired, privateKey: privateKey, presharedKeys: psks)
            try await commands.check(Command("wg", ["syncconf", iface, "/dev/stdin"], input: Array(config.utf8), holdsSecrets: true))
        }
        if has({ if case .bringUp = $0 { return true } else if case .createLink = $0 { return true } else { return false } }) {
            try await commands.check(Command("ip", ["link", "set", "dev", iface, "up"]))
        }
        for change in changes {
            if case .writeFile(let path, _, let after, let mode) = change.operation {
                try host.files.makeDirectory("/etc/wireguard", mode: 0o700)
                try host.files.write(path, after, mode: mode)
            }
        }
    }

    /// A WireGuard key file's content: one base64 key of 32 bytes. Checked before `wg` sees it,
    /// so a malformed file is named here, without `wg` echoing its content.
    static func key(_ bytes: [UInt8], file: String) throws -> String {
        let text = String(decoding: bytes, as: UTF8.self).trimmingNewlines
        guard (try? WireGuardKey(parsing: text)) != nil else {
            throw ReconcileError(.stalled, reason: "MalformedKey", "\(file) does not hold one WireGuard key (base64 of 32 bytes, as `wg genkey` writes)")
        }
        return text
    }

    private func createLink(_ desired: WireGuardSpec) async throws {
        let iface = desired.interface.name
        // auto: the kernel module when `ip link add` can load it, else wireguard-go.
        if desired.implementation != .userspace {
            let r = try await host.commands.run(Command("ip", ["link", "add", "dev", iface, "type", "wireguard"]))
            if r.succeeded { return }
            if desired.implementation == .kernel {
                throw ReconcileError(.stalled, reason: "NoKernelWireGuard", "ip link add \(iface) type wireguard: \(r.stderr.trimmingNewlines)")
            }
        }
        // wireguard-go creates the TUN device, then detaches into the background.
        let r = try await host.commands.run(Command("wireguard-go", [iface], timeout: .seconds(15)))
        guard r.succeeded else {
            throw ReconcileError(.stalled, reason: "UserspaceFailed", "wireguard-go \(iface): \(r.stderr.trimmingNewlines)")
        }
    }

    public func converged(_ desired: WireGuardSpec, _ observed: Observed) -> Condition {
        var condition = Condition.ready(observed.device?.publicKey.map { "public key \($0)" } ?? "")
        if let key = observed.device?.publicKey { condition.facts[Condition.wireguardPublicKey] = key }
        return condition
    }

    public func verify(_ desired: WireGuardSpec) async throws -> Condition {
        let observed = try await observe(desired)
        let remaining = try plan(desired, observed)
        if remaining.isEmpty { return converged(desired, observed) }
        return Condition(.failed, reason: "NotConverged", message: remaining.map(\.subject).joined(separator: "; "))
    }
}

extension String {
    var trimmingNewlines: String {
        var s = Substring(self)
        while let last = s.last, last == "\n" || last == "\r" || last == " " { s = s.dropLast() }
        return String(s)
    }
}
