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

/// `wg show IFACE dump`, parsed. The private key itself is never kept: only whether one is set
/// and its public half.
public struct WireGuardDevice: Sendable, Equatable {
    public struct Peer: Sendable, Equatable {
        public var publicKey: String
        public var presharedKey: String?
        public var allowedIPs: [String]
        public var persistentKeepalive: Int?
        /// Seconds since the epoch of the last handshake; nil when there has been none.
        public var latestHandshake: Int64?
    }

    public var publicKey: String?
    public var listenPort: Int?
    public var peers: [Peer]

    /// Parses the tab-separated dump: the interface line first, then one line per peer.
    static func parse(dump: String) -> WireGuardDevice? {
        let lines = dump.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init) }
        guard let first = lines.first, first.count >= 4 else { return nil }
        func none(_ s: String) -> String? { s == "(none)" || s == "off" || s.isEmpty ? nil : s }
        let peers = lines.dropFirst().compactMap { f -> Peer? in
            guard f.count >= 8 else { return nil }
            let handshake = Int64(f[4]).flatMap { $0 == 0 ? nil : $0 }
            return Peer(publicKey: f[0], presharedKey: none(f[1]),
                        allowedIPs: none(f[3])?.split(separator: ",").map(String.init) ?? [],
                        persistentKeepalive: none(f[7]).flatMap { Int($0) }, latestHandshake: handshake)
        }
        return WireGuardDevice(publicKey: none(first[1]), listenPort: Int(first[2]).flatMap { $0 == 0 ? nil : $0 }, peers: peers)
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
