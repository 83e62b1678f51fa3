public import YAML
import Foundation

public struct AlertingSpec: Sendable, Equatable, YAMLDecodable {
    public struct Email: Sendable, Equatable, YAMLDecodable {
        public var to: [EmailAddress]
        public var from: EmailAddress
        public var smarthost: HostPort
        public var username: String?
        public var passwordFile: AbsolutePath?
        public var requireTLS: Bool

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context,
                                      keys: ["to", "from", "smarthost", "username", "passwordFile", "requireTLS"])
            if let one = r.node("to"), one.scalar != nil {
                to = [try EmailAddress(yaml: one, path: path + "to", context: context)]
            } else {
                to = try r.required("to")
            }
            from = try r.required("from")
            smarthost = try r.required("smarthost")
            username = try r.optional("username")
            passwordFile = try r.optional("passwordFile")
            requireTLS = try r.optional("requireTLS") ?? true
            try r.finish()
            if to.isEmpty {
                throw context.fail(.invalidValue, "at least one recipient is needed", at: r.node("to")!.mark, path: path + "to")
            }
            if username != nil, passwordFile == nil {
                throw context.fail(.missingField, "\"username\" is set, so \"passwordFile\" is needed too", at: node.mark, path: path)
            }
            if passwordFile != nil, username == nil {
                throw context.fail(.missingField, "\"passwordFile\" is set, so \"username\" is needed too (the smarthost login)", at: node.mark, path: path)
            }
        }
    }

    /// The kube-prometheus-stack release whose Alertmanager sends the mail.
    public var release: DNSLabel
    public var email: Email?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["release", "email"])
        release = try r.optional("release") ?? (try! DNSLabel(parsing: "monitoring"))
        email = try r.optional("email")
        try r.finish()
    }
}
