public import YAML
import Foundation

public struct WireGuardSpec: Sendable, Equatable, YAMLDecodable {
    public enum Implementation: String, Sendable, CaseIterable, YAMLEnum {
        case auto, kernel, userspace
    }

    public struct Peer: Sendable, Equatable, YAMLDecodable {
        public var name: SimpleName
        public var publicKey: WireGuardKey
        public var allowedIPs: [IPNetwork]
        public var persistentKeepalive: Int?
        public var presharedKeyFile: AbsolutePath?

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context,
                                      keys: ["name", "publicKey", "allowedIPs", "persistentKeepalive", "presharedKeyFile"])
            name = try r.required("name")
            publicKey = try r.required("publicKey")
            allowedIPs = try r.required("allowedIPs")
            persistentKeepalive = try r.optional("persistentKeepalive")
            presharedKeyFile = try r.optional("presharedKeyFile")
            try r.finish()
            if allowedIPs.isEmpty {
                throw context.fail(.invalidValue, "a peer needs at least one allowed IP", at: r.node("allowedIPs")!.mark, path: path + "allowedIPs")
            }
            if let k = persistentKeepalive, !(0...65535).contains(k) {
                throw context.fail(.invalidValue, "persistentKeepalive must be 0-65535 seconds", at: r.node("persistentKeepalive")!.mark,
                                   path: path + "persistentKeepalive")
            }
        }
    }

    public var interface: InterfaceName
    public var address: InterfaceAddress
    public var listenPort: Port
    public var mtu: Int?
    public var implementation: Implementation
    /// The public host name or address clients dial; written into client configs.
    public var endpoint: HostOrIP?
    /// Generated on the node if missing (mode 0600); never leaves it.
    public var privateKeyFile: AbsolutePath
    public var peers: [Peer]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["interface", "address", "listenPort", "mtu", "implementation", "endpoint", "privateKeyFile", "peers"])
        interface = try r.optional("interface") ?? (try! InterfaceName(parsing: "wg0"))
        address = try r.required("address")
        listenPort = try r.optional("listenPort") ?? Port(51820)!
        mtu = try r.optional("mtu")
        implementation = try r.optional("implementation") ?? .auto
        endpoint = try r.optional("endpoint")
        privateKeyFile = try r.optional("privateKeyFile") ?? AbsolutePath("/etc/nodeagent/secrets/wg0.key")
        peers = try r.optional("peers") ?? []
        try r.finish()
        if let mtu, !(1280...9000).contains(mtu) {
            throw context.fail(.invalidValue, "mtu \(mtu) is outside 1280-9000", at: r.node("mtu")!.mark, path: path + "mtu")
        }
    }
}
