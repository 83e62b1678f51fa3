public import YAML
import Foundation

public struct ArgoCDSpec: Sendable, Equatable, YAMLDecodable {
    public struct AppOfApps: Sendable, Equatable, YAMLDecodable {
        public var name: DNSLabel
        public var repoURL: RepoURL
        public var path: String
        public var targetRevision: String
        /// Where the child Applications deploy by default.
        public var destinationNamespace: DNSLabel
        /// For a private repository: username plus a password/token file, or an SSH key file.
        public var username: String?
        public var passwordFile: AbsolutePath?
        public var sshPrivateKeyFile: AbsolutePath?
        /// The Argo CD `AppProject` the root Application and its children are confined to.
        public var project: Project
        /// SSH host keys (`known_hosts` lines: `HOST KEYTYPE KEY`) Argo CD trusts besides the
        /// ones its chart ships (GitHub, GitLab, Bitbucket, Azure DevOps): a self-hosted Git
        /// server's. Public keys, not secrets: they belong in Git, where they are reviewed.
        public var knownHosts: [String]

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context,
                                      keys: ["name", "repoURL", "path", "targetRevision", "destinationNamespace",
                                             "username", "passwordFile", "sshPrivateKeyFile", "project", "knownHosts"])
            name = try r.optional("name") ?? (try! DNSLabel(parsing: "root"))
            repoURL = try r.required("repoURL")
            self.path = try r.required("path")
            targetRevision = try r.optional("targetRevision") ?? "HEAD"
            destinationNamespace = try r.optional("destinationNamespace") ?? (try! DNSLabel(parsing: "argocd"))
            username = try r.optional("username")
            passwordFile = try r.optional("passwordFile")
            sshPrivateKeyFile = try r.optional("sshPrivateKeyFile")
            project = try r.optional("project") ?? Project()
            knownHosts = try r.optional("knownHosts") ?? []
            try r.finish()
            for (i, line) in knownHosts.enumerated() {
                let fields = line.split(separator: " ", omittingEmptySubsequences: true)
                let keyTypes = ["ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                                "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"]
                guard fields.count == 3, keyTypes.contains(String(fields[1])), Data(base64Encoded: String(fields[2])).map({ $0.count > 16 }) == true else {
                    let at = (path + "knownHosts").appending(index: i)
                    throw context.fail(.invalidValue, "\"\(line.prefix(60))\" is not a known_hosts line: HOST KEYTYPE BASE64KEY, as `ssh-keyscan HOST` prints it",
                                       at: context.mark(for: at), path: at)
                }
            }
            if let host = Self.sshHost(repoURL), !Self.chartKnownHosts.contains(host),
               !knownHosts.contains(where: { line in Self.hostsOf(line).contains(host) }) {
                throw context.fail(.invalidValue, "\(repoURL) is an SSH repository on \(host), whose host key Argo CD does not know (its chart ships only "
                                   + "GitHub's, GitLab's, Bitbucket's and Azure DevOps' keys): add its keys under knownHosts (ssh-keyscan \(host))",
                                   at: r.node("repoURL")!.mark, path: path + "repoURL")
            }
            if passwordFile != nil, sshPrivateKeyFile != nil {
                throw context.fail(.conflict, "set either passwordFile or sshPrivateKeyFile, not both", at: node.mark, path: path)
            }
        }
    }

    /// What the App-of-Apps may deploy. Signing protects platform.yaml only: without this,
    /// whoever can push to the apps repository could deploy anything anywhere through a child
    /// Application. The project is named after the root Application.
    public struct Project: Sendable, Equatable, YAMLDecodable {
        /// Repositories children may use besides the root's `repoURL` (always allowed).
        public var sourceRepos: [RepoURL]
        /// Namespaces the root and its children may deploy into (`*`: any).
        public var destinationNamespaces: [String]
        /// Cluster-scoped kinds they may create, as `Kind` (core group) or `group/Kind`.
        public var clusterResources: [String]
        /// GnuPG key IDs: Argo CD syncs only commits signed by one of them.
        public var signatureKeys: [String]
        /// Empty Argo CD's `default` project, so a child naming it cannot escape this one.
        public var restrictDefaultProject: Bool

        public init() {
            sourceRepos = []
            destinationNamespaces = ["*"]
            clusterResources = ["Namespace"]
            signatureKeys = []
            restrictDefaultProject = true
        }

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            self.init()
            let r = try MappingReader(node, path: path, context: context,
                                      keys: ["sourceRepos", "destinationNamespaces", "clusterResources", "signatureKeys", "restrictDefaultProject"])
            sourceRepos = try r.optional("sourceRepos") ?? []
            destinationNamespaces = try r.optional("destinationNamespaces") ?? ["*"]
            clusterResources = try r.optional("clusterResources") ?? ["Namespace"]
            signatureKeys = try r.optional("signatureKeys") ?? []
            restrictDefaultProject = try r.optional("restrictDefaultProject") ?? true
            try r.finish()
            for (i, ns) in destinationNamespaces.enumerated() where ns != "*" && (try? DNSLabel(parsing: ns)) == nil {
                let at = (path + "destinationNamespaces").appending(index: i)
                throw context.fail(.invalidValue, "\"\(ns)\" is not a namespace name (or *)", at: context.mark(for: at), path: at)
            }
            for (i, kind) in clusterResources.enumerated() {
                let parts = kind.split(separator: "/", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), let last = parts.last, last.first?.isUppercase == true,
                      kind.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "./-".contains($0)) }) else {
                    let at = (path + "clusterResources").appending(index: i)
                    throw context.fail(.invalidValue, "\"\(kind)\" is not a kind: write Kind (core group) or group/Kind, such as rbac.authorization.k8s.io/ClusterRole",
                                       at: context.mark(for: at), path: at)
                }
            }
            for (i, key) in signatureKeys.enumerated() where !(8...40).contains(key.count) || !key.allSatisfy(\.isHexDigit) {
                let at = (path + "signatureKeys").appending(index: i)
                throw context.fail(.invalidValue, "\"\(key)\" is not a GnuPG key ID (hexadecimal, such as 4AEE18F83AFDEB23)",
                                   at: context.mark(for: at), path: at)
            }
        }
    }

    /// The Helm release that installs Argo CD.
    public var release: DNSLabel
    public var namespace: DNSLabel
    public var appOfApps: AppOfApps?

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["release", "namespace", "appOfApps"])
        release = try r.optional("release") ?? (try! DNSLabel(parsing: "argocd"))
        namespace = try r.optional("namespace") ?? (try! DNSLabel(parsing: "argocd"))
        appOfApps = try r.optional("appOfApps")
        try r.finish()
    }
}

extension ArgoCDSpec.AppOfApps {
    /// The hosts whose keys the argo-cd chart ships in `configs.ssh.knownHosts`
    /// (argoproj/argo-helm, charts/argo-cd/values.yaml at argo-cd-7.7.11 and argo-cd-10.1.1).
    static let chartKnownHosts: Set<String> = ["github.com", "ssh.github.com", "gitlab.com", "bitbucket.org", "ssh.dev.azure.com",
                                               "vs-ssh.visualstudio.com"]

    /// The host of an SSH repository URL (`git@host:path`, `ssh://user@host[:port]/path`),
    /// as known_hosts names it (`[host]:port` for another port); nil for other URLs.
    static func sshHost(_ url: RepoURL) -> String? {
        let v = url.value
        if v.hasPrefix("git@"), let colon = v.firstIndex(of: ":") { return String(v[v.index(v.startIndex, offsetBy: 4)..<colon]).lowercased() }
        guard url.scheme == "ssh" else { return nil }
        var authority = String(v.dropFirst("ssh://".count).prefix { $0 != "/" })
        if let at = authority.lastIndex(of: "@") { authority = String(authority[authority.index(after: at)...]) }
        if let colon = authority.lastIndex(of: ":"), !authority.hasPrefix("[") {
            let port = authority[authority.index(after: colon)...]
            let host = authority[..<colon].lowercased()
            return port == "22" ? host : "[\(host)]:\(port)"
        }
        return authority.lowercased()
    }

    /// The host names of a known_hosts line (its first field, comma-separated).
    static func hostsOf(_ line: String) -> [String] {
        (line.split(separator: " ").first ?? "").split(separator: ",").map { $0.lowercased() }
    }
}
