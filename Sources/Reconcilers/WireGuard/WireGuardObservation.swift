#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif

/// What the kernel (or wireguard-go) says about one WireGuard interface.
public struct WireGuardLink: Sendable, Equatable {
    public var exists: Bool
    public var up: Bool
    public var mtu: Int?
    /// `ADDRESS/PREFIX`, as `ip` prints them.
    public var addresses: [String]

    static let absent = WireGuardLink(exists: false, up: false, mtu: nil, addresses: [])
}

/// `wg show IFACE dump`, parsed. The private key is kept only to compare it with the key file;
/// it is never printed.
public struct WireGuardDevice: Sendable, Equatable, CustomStringConvertible {
    public struct Peer: Sendable, Equatable {
        public var publicKey: String
        public var presharedKey: String?
        public var allowedIPs: [String]
        public var persistentKeepalive: Int?
        /// Seconds since the epoch of the last handshake; nil when there has been none.
        public var latestHandshake: Int64?
    }

    /// The device's private key, for `== file content` only.
    var privateKeyMatches: String?
    public var publicKey: String?
    public var listenPort: Int?
    public var peers: [Peer]

    public init(privateKey: String? = nil, publicKey: String?, listenPort: Int?, peers: [Peer]) {
        privateKeyMatches = privateKey
        self.publicKey = publicKey
        self.listenPort = listenPort
        self.peers = peers
    }

    /// Without the private key, so that printing an observation never leaks it.
    public var description: String {
        "WireGuardDevice(publicKey: \(publicKey ?? "none"), listenPort: \(listenPort.map(String.init) ?? "none"), peers: \(peers.count))"
    }

    /// Parses the tab-separated dump: the interface line first, then one line per peer.
    static func parse(dump: String) -> WireGuardDevice? {
        let lines = dump.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        // `wg show IFACE dump`: the device (private key, public key, port, fwmark), then one line
        // of 8 fields per peer; keys are 44 characters of base64. Anything else is refused whole.
        func isKey(_ s: String) -> Bool { s == "(none)" || (s.utf8.count == 44 && s.hasSuffix("=") && s.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "+/=".contains($0)) }) }
        guard let first = lines.first, first.count == 4, isKey(first[0]), isKey(first[1]), Int(first[2]) != nil,
              lines.dropFirst().allSatisfy({ $0.count == 8 && isKey($0[0]) && isKey($0[1]) && Int($0[4]) != nil }) else { return nil }
        func none(_ s: String) -> String? { s == "(none)" || s == "off" || s.isEmpty ? nil : s }
        let peers = lines.dropFirst().compactMap { f -> Peer? in
            let handshake = Int64(f[4]).flatMap { $0 == 0 ? nil : $0 }
            return Peer(publicKey: f[0], presharedKey: none(f[1]),
                        allowedIPs: none(f[3])?.split(separator: ",").map(String.init) ?? [],
                        persistentKeepalive: none(f[7]).flatMap { Int($0) }, latestHandshake: handshake)
        }
        return WireGuardDevice(privateKey: none(first[0]), publicKey: none(first[1]),
                               listenPort: Int(first[2]).flatMap { $0 == 0 ? nil : $0 }, peers: peers)
    }
}

/// The JSON `ip -j addr show dev IFACE` prints (iproute2 5.x and later).
struct IPAddrJSON: Decodable {
    struct AddrInfo: Decodable {
        var family: String?
        var local: String?
        var prefixlen: Int?
    }

    var ifname: String
    var flags: [String]?
    var mtu: Int?
    var addr_info: [AddrInfo]?

    static func link(from json: String) -> WireGuardLink {
        guard let entries = try? JSONDecoder().decode([IPAddrJSON].self, from: Data(json.utf8)), let e = entries.first else {
            return .absent
        }
        let addresses = (e.addr_info ?? []).compactMap { a -> String? in
            guard let local = a.local, let prefix = a.prefixlen, a.family == "inet" || a.family == "inet6" else { return nil }
            // Link-local IPv6 addresses come with the interface, not from the desired state.
            if local.lowercased().hasPrefix("fe80:") { return nil }
            return "\(local)/\(prefix)"
        }
        return WireGuardLink(exists: true, up: e.flags?.contains("UP") ?? false, mtu: e.mtu, addresses: addresses)
    }
}
