public import YAML
import Foundation

public struct HelmRelease: Sendable, Equatable, YAMLDecodable {
    /// A chart value read from a file on the node, delivered through a Kubernetes Secret.
    public struct ValueFromFile: Sendable, Equatable, YAMLDecodable {
        /// Dotted path in the chart's values, such as `auth.postgresPassword`.
        public var key: String
        public var file: AbsolutePath

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["key", "file"])
            key = try r.required("key")
            file = try r.required("file")
            try r.finish()
            let segments = key.split(separator: ".", omittingEmptySubsequences: false)
            guard segments.allSatisfy({ !$0.isEmpty }) else {
                throw context.fail(.invalidValue, "\"\(key)\" is not a dotted values path such as auth.postgresPassword",
                                   at: r.node("key")!.mark, path: path + "key")
            }
        }
    }

    public var name: DNSLabel
    public var chart: String
    /// The chart repository; omitted when `chart` is an `oci://` reference.
    public var repo: RepoURL?
    public var version: String
    public var namespace: DNSLabel
    public var createNamespace: Bool
    public var values: JSONValue
    public var valuesSecrets: [ValueFromFile]
    /// Releases that must be Ready before this one is applied (an operator before the chart
    /// that uses its CRDs).
    public var dependsOn: [DNSLabel]

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["name", "chart", "repo", "version", "namespace", "createNamespace", "values", "valuesSecrets", "dependsOn"])
        name = try r.required("name")
        chart = try r.required("chart")
        repo = try r.optional("repo")
        version = try r.required("version")
        namespace = try r.required("namespace")
        createNamespace = try r.optional("createNamespace") ?? true
        valuesSecrets = try r.optional("valuesSecrets") ?? []
        dependsOn = try r.optional("dependsOn") ?? []
        values = .object([])
        if let v = r.node("values") {
            guard v.mapping != nil else {
                throw context.fail(.typeMismatch, "expected a mapping of chart values, found \(v.kindDescription)", at: v.mark, path: path + "values")
            }
            if SecretKeys.scan(v, path: path + "values", context: context,
                               remedy: "write it to a file on the node and list it under \"valuesSecrets\" (key: the values path, file: the file)") {
                throw DecodeFailure()
            }
            values = JSONValue(v)
        }
        try r.finish()
        if repo == nil, !chart.hasPrefix("oci://") {
            throw context.fail(.missingField, "missing required field \"repo\" (only an oci:// chart may omit it)", at: node.mark, path: path)
        }
        if let repo, !["https", "http", "oci"].contains(repo.scheme) {
            throw context.fail(.invalidValue, "a chart repository must be https://, http:// or oci://", at: r.node("repo")!.mark, path: path + "repo")
        }
        if version.isEmpty || version.contains(where: { $0 == " " || $0 == "/" }) {
            throw context.fail(.invalidValue, "\"\(version)\" is not a chart version; pin one, such as 7.7.11",
                               at: r.node("version")!.mark, path: path + "version")
        }
    }
}
