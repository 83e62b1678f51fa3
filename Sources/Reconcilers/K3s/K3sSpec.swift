public import YAML
import Foundation

public struct K3sSpec: Sendable, Equatable, YAMLDecodable {
    /// The packaged components K3s can be told not to deploy (`--disable`).
    public static let components = ["traefik", "servicelb", "local-storage", "metrics-server", "coredns", "runtimes"]

    public var version: K3sVersion
    /// Of the amd64 `k3s` binary of that release.
    public var sha256: SHA256Digest
    public var disable: [String]
    public var tlsSANs: [HostOrIP]
    public var nodeIP: IPAddress?
    public var clusterCIDR: IPNetwork
    public var serviceCIDR: IPNetwork
    /// Where `VERSION/k3s` is downloaded from.
    public var downloadURL: RepoURL
    /// How long a started or upgraded K3s may take to report Ready before it is rolled back.
    public var readyTimeout: TimeSpan
    /// K3s's datastore does not support going back a minor version; set to force it anyway.
    public var allowMinorDowngrade: Bool

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["version", "sha256", "disable", "tlsSANs", "nodeIP", "clusterCIDR", "serviceCIDR",
                                         "downloadURL", "readyTimeout", "allowMinorDowngrade"])
        version = try r.required("version")
        sha256 = try r.required("sha256")
        disable = try r.optional("disable") ?? []
        tlsSANs = try r.optional("tlsSANs") ?? []
        nodeIP = try r.optional("nodeIP")
        clusterCIDR = try r.optional("clusterCIDR") ?? (try! IPNetwork(parsing: "10.42.0.0/16"))
        serviceCIDR = try r.optional("serviceCIDR") ?? (try! IPNetwork(parsing: "10.43.0.0/16"))
        downloadURL = try r.optional("downloadURL") ?? (try! RepoURL(parsing: "https://github.com/k3s-io/k3s/releases/download"))
        readyTimeout = try r.optional("readyTimeout") ?? TimeSpan(milliseconds: 300_000)
        allowMinorDowngrade = try r.optional("allowMinorDowngrade") ?? false
        try r.finish()
        for (i, component) in disable.enumerated() where !K3sSpec.components.contains(component) {
            let at = (path + "disable").appending(index: i)
            throw context.fail(.invalidValue, EnumHelp.message(component, K3sSpec.components), at: context.mark(for: at), path: at)
        }
    }
}
