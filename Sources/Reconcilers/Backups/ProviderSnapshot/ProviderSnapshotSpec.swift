public import YAML

/// `spec.backups.providerSnapshot`: a snapshot of the whole VPS by its provider's API (OVHcloud
/// now; `SnapshotProvider` is the seam another provider would implement).
public struct ProviderSnapshotSpec: Sendable, Equatable, YAMLDecodable {
    public enum Provider: String, Sendable, CaseIterable, YAMLEnum { case ovh }

    public var provider: Provider
    /// The API's base URL (OVHcloud: https://eu.api.ovh.com/1.0, https://ca.api.ovh.com/1.0,
    /// https://api.us.ovhcloud.com/1.0); http:// only on loopback (tests). Nil: the one the
    /// credentials file names (`[default] endpoint=ovh-ca`), else the EU one.
    public var endpoint: String?
    /// The VPS's service name: `vps-1a2b3c4d.vps.ovh.net`.
    public var serviceName: String
    /// python-ovh's `ovh.conf`: application key and secret, consumer key.
    public var credentialsFile: AbsolutePath
    /// When the daemon replaces the snapshot (UTC), if at all.
    public var schedule: CronSchedule?
    /// Take a snapshot first, and upgrade K3s only once it is done.
    public var beforeK3sUpgrade: Bool

    public static let defaultEndpoint = "https://eu.api.ovh.com/1.0"

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["provider", "endpoint", "serviceName", "credentialsFile", "schedule", "beforeK3sUpgrade"])
        provider = try r.required("provider")
        endpoint = try r.optional("endpoint")
        serviceName = try r.required("serviceName")
        credentialsFile = try r.required("credentialsFile")
        schedule = try r.optional("schedule")
        beforeK3sUpgrade = try r.optional("beforeK3sUpgrade") ?? false
        try r.finish()
        if let endpoint {
            // Signed as written: only OVHcloud's own endpoints, or loopback (tests).
            let known = OVHCredentials.endpoints.values.contains(endpoint)
            guard known || (endpoint.lowercased().hasPrefix("http://") && RepoURL.isLoopbackURL(endpoint)
                            && !endpoint.contains(where: { $0.isWhitespace || "\"\\?#@".contains($0) })) else {
                throw context.fail(.invalidValue, "endpoint must be one of \(OVHCredentials.endpoints.values.sorted().joined(separator: ", ")) (http:// only on loopback)",
                                   at: r.node("endpoint")!.mark, path: path + "endpoint")
            }
        }
        guard !serviceName.isEmpty, serviceName.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) }) else {
            throw context.fail(.invalidValue, "\"\(serviceName)\" is not a VPS service name (such as vps-1a2b3c4d.vps.ovh.net)",
                               at: r.node("serviceName")!.mark, path: path + "serviceName")
        }
    }
}
