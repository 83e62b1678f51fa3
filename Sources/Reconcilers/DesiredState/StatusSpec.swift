public import YAML
import Foundation

/// `spec.status`: where the daemon serves /status and /metrics (read by the daemon itself: no
/// reconciler of its own).
public struct StatusSpec: SectionSpec {
    public static let key = "status"
    public var secretFiles: [(key: String, file: AbsolutePath)] { tokenFile.map { [("tokenFile", $0)] } ?? [] }

    /// Address and port of the status/metrics server: a VPN or loopback address, never public.
    public var listen: HostPort
    /// Bearer token for `POST /sync`.
    public var tokenFile: AbsolutePath?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["listen", "tokenFile"])
        listen = try r.required("listen")
        tokenFile = try r.optional("tokenFile")
        try r.finish()
        guard listen.ip != nil else {
            throw context.fail(.invalidValue, "listen must be an IP address and port (the WireGuard address, such as 10.8.0.1:9430)",
                               at: r.node("listen")!.mark, path: path + "listen")
        }
    }
}
