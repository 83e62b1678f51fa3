public import YAML
import Foundation

public struct FirewallSpec: Sendable, Equatable, YAMLDecodable {
    public struct Ports: Sendable, Equatable, YAMLDecodable {
        public var tcp: [Port]
        public var udp: [Port]

        public init(tcp: [Port], udp: [Port]) {
            self.tcp = tcp
            self.udp = udp
        }

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["tcp", "udp"])
            tcp = try r.optional("tcp") ?? []
            udp = try r.optional("udp") ?? []
            try r.finish()
        }
    }

    /// The first (or only) public interface.
    public var publicInterface: InterfaceName { publicInterfaces[0] }
    /// Every interface the internet reaches (`publicInterface`, or `publicInterfaces` on a node
    /// with a second public NIC): each gets the pre-DNAT filter.
    public var publicInterfaces: [InterfaceName]
    /// Open to everyone on the public interface. Default: tcp 22, 80, 443; udp 51820.
    public var `public`: Ports
    /// Open on the WireGuard interface only.
    public var vpnOnly: Ports

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["publicInterface", "publicInterfaces", "public", "vpnOnly"])
        let one: InterfaceName? = try r.optional("publicInterface")
        let many: [InterfaceName]? = try r.optional("publicInterfaces")
        switch (one, many) {
        case (let one?, nil): publicInterfaces = [one]
        case (nil, let many?) where !many.isEmpty: publicInterfaces = many
        case (nil, _?):
            throw context.fail(.invalidValue, "publicInterfaces lists no interface", at: r.node("publicInterfaces")!.mark, path: path + "publicInterfaces")
        case (_?, _?):
            throw context.fail(.conflict, "set either publicInterface or publicInterfaces, not both", at: node.mark, path: path)
        case (nil, nil):
            throw context.fail(.missingField, "missing required field \"publicInterface\" (or \"publicInterfaces\", a list)", at: node.mark, path: path)
        }
        `public` = try r.optional("public") ?? Ports(tcp: [22, 80, 443].compactMap(Port.init), udp: [Port(51820)!])
        vpnOnly = try r.optional("vpnOnly") ?? Ports(tcp: [], udp: [])
        try r.finish()
    }
}
