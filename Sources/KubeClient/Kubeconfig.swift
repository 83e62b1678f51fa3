#if canImport(FoundationEssentials)
internal import FoundationEssentials
#else
internal import Foundation
#endif
public import YAML

/// The parts of a kubeconfig (K3s writes `/etc/rancher/k3s/k3s.yaml`) that nodeagent uses: the
/// current context's server, CA, client certificate and key, or bearer token.
///
/// Certificates and keys stay in memory: they are handed to libcurl as blobs, never written to
/// temp files. Files a kubeconfig refers to (`certificate-authority`, `client-key`, `tokenFile`)
/// are read at load time. Keys nodeagent does not use are ignored, as kubectl does.
public struct Kubeconfig: Sendable {
    public var contextName: String
    /// `https://HOST:PORT`, without a trailing slash.
    public var server: String
    public var caPEM: [UInt8]?
    public var insecureSkipTLSVerify: Bool
    public var clientCertificatePEM: [UInt8]?
    public var clientKeyPEM: [UInt8]?
    public var token: String?
    public var namespace: String?

    public init(contextName: String = "test", server: String, caPEM: [UInt8]?, insecureSkipTLSVerify: Bool = false,
                clientCertificatePEM: [UInt8]? = nil, clientKeyPEM: [UInt8]? = nil, token: String? = nil, namespace: String? = nil) {
        self.contextName = contextName
        self.server = server
        self.caPEM = caPEM
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.clientCertificatePEM = clientCertificatePEM
        self.clientKeyPEM = clientKeyPEM
        self.token = token
        self.namespace = namespace
    }

    /// Reads a kubeconfig file.
    /// - Parameters:
    ///   - context: the context to use; nil for `current-context`.
    /// - Throws: `DiagnosticsError` naming `FILE:LINE:COL` and the field for any problem.
    public static func load(path: String, context: String? = nil) throws(DiagnosticsError) -> Kubeconfig {
        try parse(try FileReading.read(path), file: path, context: context)
    }

    public static func parse(_ bytes: [UInt8], file: String, context: String? = nil) throws(DiagnosticsError) -> Kubeconfig {
        let root = try YAMLParser().parseDocument(bytes, file: file)
        let ctx = DecodeContext(file: file, root: root)
        do {
            return try decode(root, file: file, context: context, ctx)
        } catch {
            if ctx.diagnostics.isEmpty {
                throw DiagnosticsError([Diagnostic(file: file, mark: .start, code: .invalidValue, message: "\(error)")])
            }
            throw DiagnosticsError(ctx.sortedDiagnostics)
        }
    }

    private struct Named {
        var name: String
        var node: YAMLNode
        var path: FieldPath
    }

    private static func decode(_ root: YAMLNode, file: String, context wanted: String?, _ ctx: DecodeContext) throws -> Kubeconfig {
        let top = try MappingReader(root, path: .root, context: ctx, keys: ["clusters", "users", "contexts", "current-context"],
                                    ignoringOthers: true)
        func list(_ key: String, inner: String) throws -> [Named] {
            guard let items = top.node(key)?.sequence else {
                let at = top.node(key)?.mark ?? root.mark
                throw ctx.fail(.missingField, top.has(key) ? "expected a sequence" : "missing required field \"\(key)\"", at: at,
                               path: FieldPath.root + key)
            }
            return try items.enumerated().map { i, item in
                let path = (FieldPath.root + key).appending(index: i)
                let r = try MappingReader(item, path: path, context: ctx, keys: ["name", inner], ignoringOthers: true)
                return Named(name: try r.required("name"), node: try r.required(inner, as: NodeBox.self).node, path: path + inner)
            }
        }
        let contexts = try list("contexts", inner: "context")
        let name: String
        if let wanted { name = wanted } else {
            name = try top.required("current-context", as: String.self)
        }
        guard let chosen = contexts.first(where: { $0.name == name }) else {
            throw ctx.fail(.invalidValue, "no context named \"\(name)\" (contexts: \(contexts.map(\.name).joined(separator: ", ")))",
                           at: top.node("current-context")?.mark ?? root.mark, path: FieldPath.root + "current-context")
        }
        let c = try MappingReader(chosen.node, path: chosen.path, context: ctx, keys: ["cluster", "user", "namespace"], ignoringOthers: true)
        let clusterName: String = try c.required("cluster")
        let userName: String = try c.required("user")
        let namespace: String? = try c.optional("namespace")

        let clusters = try list("clusters", inner: "cluster")
        guard let cluster = clusters.first(where: { $0.name == clusterName }) else {
            throw ctx.fail(.invalidValue, "context \"\(name)\" names cluster \"\(clusterName)\", which clusters does not declare",
                           at: c.node("cluster")!.mark, path: chosen.path + "cluster")
        }
        let cl = try MappingReader(cluster.node, path: cluster.path, context: ctx,
                                   keys: ["server", "certificate-authority-data", "certificate-authority", "insecure-skip-tls-verify"],
                                   ignoringOthers: true)
        let server: String = try cl.required("server")
        guard server.hasPrefix("https://") || server.hasPrefix("http://") else {
            throw ctx.fail(.invalidValue, "server must be an https:// URL, not \"\(server)\"", at: cl.node("server")!.mark, path: cluster.path + "server")
        }
        let ca = try pem(cl, data: "certificate-authority-data", file: "certificate-authority", at: cluster.path, ctx)

        let users = try list("users", inner: "user")
        guard let user = users.first(where: { $0.name == userName }) else {
            throw ctx.fail(.invalidValue, "context \"\(name)\" names user \"\(userName)\", which users does not declare",
                           at: c.node("user")!.mark, path: chosen.path + "user")
        }
        let u = try MappingReader(user.node, path: user.path, context: ctx,
                                  keys: ["client-certificate-data", "client-certificate", "client-key-data", "client-key",
                                         "token", "tokenFile", "exec", "auth-provider", "username", "password"], ignoringOthers: true)
        for unsupported in ["exec", "auth-provider", "username"] where u.has(unsupported) {
            throw ctx.fail(.unsupported, "\"\(unsupported)\" credentials are not supported; use a client certificate or a token",
                           at: u.node(unsupported)!.mark, path: user.path + unsupported)
        }
        var token: String? = try u.optional("token")
        if token == nil, let tokenFile: String = try u.optional("tokenFile") {
            do {
                token = String(decoding: try FileReading.read(tokenFile), as: UTF8.self).split(separator: "\n").first.map(String.init)
            } catch {
                throw ctx.fail(.io, "cannot read tokenFile \(tokenFile): \(error.diagnostics.first?.message ?? "")",
                               at: u.node("tokenFile")!.mark, path: user.path + "tokenFile")
            }
        }
        let cert = try pem(u, data: "client-certificate-data", file: "client-certificate", at: user.path, ctx)
        let key = try pem(u, data: "client-key-data", file: "client-key", at: user.path, ctx)
        if (cert == nil) != (key == nil) {
            throw ctx.fail(.missingField, "a client certificate needs its key, and a key its certificate", at: user.node.mark, path: user.path)
        }
        if cert == nil, token == nil {
            throw ctx.fail(.missingField, "user \"\(userName)\" has neither a client certificate nor a token", at: user.node.mark, path: user.path)
        }
        let insecure: Bool = try cl.optional("insecure-skip-tls-verify") ?? false
        var trimmed = server
        while trimmed.hasSuffix("/") { trimmed.removeLast() }
        return Kubeconfig(contextName: name, server: trimmed, caPEM: ca, insecureSkipTLSVerify: insecure,
                          clientCertificatePEM: cert, clientKeyPEM: key, token: token, namespace: namespace)
    }

    /// A PEM given inline as base64 (`…-data`) or as a file path.
    private static func pem(_ r: MappingReader, data: String, file: String, at path: FieldPath, _ ctx: DecodeContext) throws -> [UInt8]? {
        if let text: String = try r.optional(data) {
            guard let decoded = Data(base64Encoded: text.filter { !$0.isWhitespace }), !decoded.isEmpty else {
                throw ctx.fail(.invalidValue, "\(data) is not valid base64", at: r.node(data)!.mark, path: path + data)
            }
            let bytes = [UInt8](decoded)
            guard String(decoding: bytes.prefix(64), as: UTF8.self).contains("-----BEGIN ") else {
                throw ctx.fail(.invalidValue, "\(data) does not hold a PEM block (-----BEGIN …)", at: r.node(data)!.mark, path: path + data)
            }
            return bytes
        }
        if let filePath: String = try r.optional(file) {
            do {
                return try FileReading.read(filePath)
            } catch {
                throw ctx.fail(.io, "cannot read \(file) \(filePath): \(error.diagnostics.first?.message ?? "")", at: r.node(file)!.mark, path: path + file)
            }
        }
        return nil
    }
}

/// A node kept as it is, for reading later with its own `MappingReader`.
struct NodeBox: YAMLDecodable {
    var node: YAMLNode
    init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        self.node = node
    }
}
