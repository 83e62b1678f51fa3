public import YAML
import Foundation

public struct OSSpec: Sendable, Equatable, YAMLDecodable {
    public var ssh: SSHSpec?
    /// Kernel parameters, in file order: `net.ipv4.ip_forward: "1"`.
    public var sysctl: [SysctlSetting]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["ssh", "sysctl"])
        ssh = try r.optional("ssh")
        sysctl = []
        if let map = r.node("sysctl") {
            let sysctlPath = path + "sysctl"
            guard let pairs = map.mapping else {
                throw context.fail(.typeMismatch, "expected a mapping of sysctl keys to values, found \(map.kindDescription)",
                                   at: map.mark, path: sysctlPath)
            }
            for pair in pairs {
                let key = pair.key.scalar?.text ?? ""
                let at = sysctlPath + key
                guard SysctlSetting.isValidKey(key) else {
                    throw context.fail(.invalidValue, "\"\(key)\" is not a sysctl key (such as net.ipv4.ip_forward)", at: pair.key.mark, path: at)
                }
                guard let scalar = pair.value.scalar, !pair.value.isNull else {
                    throw context.fail(.typeMismatch, "expected a scalar value, found \(pair.value.kindDescription)", at: pair.value.mark, path: at)
                }
                sysctl.append(SysctlSetting(key: key, value: scalar.text))
            }
        }
        try r.finish()
    }
}

public struct SysctlSetting: Sendable, Equatable {
    public var key: String
    public var value: String

    static func isValidKey(_ key: String) -> Bool {
        !key.isEmpty && !key.hasPrefix(".") && !key.hasSuffix(".") && !key.contains("..")
            && key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "._-/".contains($0)) }
    }
}

public struct SSHSpec: Sendable, Equatable, YAMLDecodable {
    public enum RootLogin: String, Sendable, CaseIterable, YAMLEnum {
        case yes, no
        case prohibitPassword = "prohibit-password"
        case forcedCommandsOnly = "forced-commands-only"
    }

    public var port: Port
    public var passwordAuthentication: Bool
    public var permitRootLogin: RootLogin
    /// Whose `authorized_keys` nodeagent writes.
    public var user: String
    public var authorizedKeys: [SSHPublicKey]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["port", "passwordAuthentication", "permitRootLogin", "user", "authorizedKeys"])
        port = try r.optional("port") ?? Port(22)!
        passwordAuthentication = try r.optional("passwordAuthentication") ?? false
        permitRootLogin = try r.optional("permitRootLogin") ?? .prohibitPassword
        user = try r.optional("user") ?? "root"
        authorizedKeys = try r.optional("authorizedKeys") ?? []
        try r.finish()
        guard user.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }), !user.isEmpty, !user.hasPrefix("-") else {
            throw context.fail(.invalidValue, "\"\(user)\" is not a user name", at: r.node("user")!.mark, path: path + "user")
        }
    }
}
