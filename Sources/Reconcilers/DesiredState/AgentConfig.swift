public import YAML

/// `/etc/nodeagent/agent.yaml`: where the desired state comes from and how the daemon runs.
/// The field names are the contract of DESIGN.md's "Agent config".
package struct AgentConfig: Sendable, Equatable {
    package struct Source: Sendable, Equatable {
        /// Any URL git understands, `file://` included.
        package var repo: String
        /// The branch or tag to follow.
        package var ref: String
        /// Hold this exact commit instead of following `ref`.
        package var commit: String?
        /// Path of platform.yaml in the repository.
        package var path: String
        package var deployKeyFile: AbsolutePath?
        /// An HTTPS access token, read from this file and sent in a header git takes from its
        /// environment: never in the URL, on a command line or in agent.yaml.
        package var tokenFile: AbsolutePath?
        /// The user name sent with the token (GitLab wants `oauth2`; GitHub takes any).
        package var tokenUser: String
        /// With it, only commits signed by a listed key apply (`git verify-commit`).
        package var allowedSignersFile: AbsolutePath?
        /// Accept a ref that moved to a commit not descending from the applied one.
        package var allowHistoryRewrite: Bool

        package init(repo: String, ref: String, commit: String?, path: String, deployKeyFile: AbsolutePath?,
                     allowedSignersFile: AbsolutePath?, allowHistoryRewrite: Bool, tokenFile: AbsolutePath? = nil, tokenUser: String = "oauth2") {
            self.tokenFile = tokenFile
            self.tokenUser = tokenUser
            self.repo = repo
            self.ref = ref
            self.commit = commit
            self.path = path
            self.deployKeyFile = deployKeyFile
            self.allowedSignersFile = allowedSignersFile
            self.allowHistoryRewrite = allowHistoryRewrite
        }
    }

    package var source: Source
    package var poll: TimeSpan
    package var drift: TimeSpan
    package var stateDirectory: AbsolutePath
    package var kubeconfig: AbsolutePath
    /// `recover: offsite`: a node with no state of its own restores itself from
    /// `spec.backups.offsite` before its first pass (a replacement VPS booted from the same
    /// user-data). Default `none`.
    package var recover: Recover

    package enum Recover: String, Sendable, CaseIterable, YAMLEnum { case none, offsite }

    package static let defaultPath = "/etc/nodeagent/agent.yaml"

    package static func load(path: String) throws(DiagnosticsError) -> AgentConfig {
        try parse(try FileReading.read(path), file: path)
    }

    package static func parse(_ bytes: [UInt8], file: String) throws(DiagnosticsError) -> AgentConfig {
        let root = try YAMLParser().parseDocument(bytes, file: file)
        let context = DecodeContext(file: file, root: root)
        do {
            return try AgentConfig(yaml: root, path: .root, context: context)
        } catch {
            throw DiagnosticsError(context.sortedDiagnostics)
        }
    }
}

extension AgentConfig: YAMLDecodable {
    package init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["apiVersion", "kind", "source", "intervals", "stateDirectory", "kubeconfig", "recover"])
        let apiVersion: String = try r.required("apiVersion")
        guard apiVersion == "nodeagent/v1" else {
            throw context.fail(.invalidValue, "apiVersion must be \"nodeagent/v1\"", at: r.node("apiVersion")!.mark, path: path + "apiVersion")
        }
        let kind: String = try r.required("kind")
        guard kind == "AgentConfig" else {
            throw context.fail(.invalidValue, "kind must be \"AgentConfig\" in the agent config, not \"\(kind)\"", at: r.node("kind")!.mark,
                               path: path + "kind")
        }
        source = try r.required("source")
        if let intervals = r.node("intervals") {
            let i = try MappingReader(intervals, path: path + "intervals", context: context, keys: ["poll", "drift"])
            poll = try i.optional("poll") ?? TimeSpan(milliseconds: 60_000)
            drift = try i.optional("drift") ?? TimeSpan(milliseconds: 300_000)
            try i.finish()
            for (name, value) in [("poll", poll), ("drift", drift)] where value < TimeSpan(milliseconds: 1000) {
                let at = path + "intervals" + name
                throw context.fail(.invalidValue, "\(name) must be at least 1s", at: context.mark(for: at), path: at)
            }
        } else {
            poll = TimeSpan(milliseconds: 60_000)
            drift = TimeSpan(milliseconds: 300_000)
        }
        stateDirectory = try r.optional("stateDirectory") ?? AbsolutePath("/var/lib/nodeagent")
        kubeconfig = try r.optional("kubeconfig") ?? AbsolutePath("/etc/rancher/k3s/k3s.yaml")
        recover = try r.optional("recover") ?? .none
        try r.finish()
    }
}

extension AgentConfig.Source: YAMLDecodable {
    package init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["repo", "ref", "commit", "path", "deployKeyFile", "tokenFile", "tokenUser", "allowedSignersFile",
                                         "allowHistoryRewrite"])
        repo = try r.required("repo")
        ref = try r.optional("ref") ?? "main"
        let commit: String? = try r.optional("commit")
        self.commit = commit?.isEmpty == true ? nil : commit
        self.path = try r.optional("path") ?? "platform.yaml"
        deployKeyFile = try r.optional("deployKeyFile")
        tokenFile = try r.optional("tokenFile")
        tokenUser = try r.optional("tokenUser") ?? "oauth2"
        allowedSignersFile = try r.optional("allowedSignersFile")
        allowHistoryRewrite = try r.optional("allowHistoryRewrite") ?? false
        try r.finish()
        if let commit = self.commit, !(commit.count == 40 && commit.allSatisfy { $0.isHexDigit && !$0.isUppercase }) {
            throw context.fail(.invalidValue, "commit must be a full commit id (40 lowercase hexadecimal digits)", at: r.node("commit")!.mark,
                               path: path + "commit")
        }
        if let key = deployKeyFile, key.value.contains("'") {
            throw context.fail(.invalidValue, "deployKeyFile must not contain a quote", at: r.node("deployKeyFile")!.mark, path: path + "deployKeyFile")
        }
        // git check-ref-format's rules, which also keep control characters out.
        let refBad = ref.isEmpty || ref.hasPrefix("-") || ref.hasPrefix("/") || ref.hasSuffix("/") || ref.hasSuffix(".") || ref.hasSuffix(".lock")
            || ref.contains("..") || ref.contains("@{") || ref.contains("//") || ref == "@"
            || ref.contains(where: { !$0.isASCII || ($0.asciiValue ?? 0) < 0x21 || $0.asciiValue == 0x7F || "~^:?*[\\".contains($0) })
        if refBad {
            throw context.fail(.invalidValue, "\"\(ref)\" is not a branch or tag name", at: r.node("ref")!.mark, path: path + "ref")
        }
        if self.path.hasPrefix("/") || self.path.split(separator: "/").contains("..") {
            throw context.fail(.invalidValue, "path is relative to the repository root, without ..", at: r.node("path")!.mark, path: path + "path")
        }
        if repo.hasPrefix("-") || repo.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) {
            throw context.fail(.invalidValue, "\"\(GitURL.redacted(repo))\" is not a repository URL", at: r.node("repo")!.mark, path: path + "repo")
        }
        if let problem = GitURL.credentialProblem(repo) {
            throw context.fail(.inlineSecret, problem, at: r.node("repo")!.mark, path: path + "repo")
        }
        if tokenFile != nil, repo.lowercased().hasPrefix("http://"), !RepoURL.isLoopbackURL(repo) {
            throw context.fail(.conflict, "a tokenFile with a plain http:// repository would send the token in clear: use https://",
                               at: r.node("tokenFile")!.mark, path: path + "tokenFile")
        }
        if tokenFile != nil, deployKeyFile != nil {
            throw context.fail(.conflict, "set either tokenFile (HTTPS) or deployKeyFile (SSH), not both", at: node.mark, path: path)
        }
        if tokenUser.isEmpty || tokenUser.contains(where: { $0 == ":" || !$0.isASCII || $0.isWhitespace || $0.isNewline }) {
            throw context.fail(.invalidValue, "tokenUser must be a plain user name (no ':', spaces or control characters)",
                               at: r.node("tokenUser")!.mark, path: path + "tokenUser")
        }
    }
}

/// Credentials in Git URLs: refused in configuration, removed from every message.
package enum GitURL {
    /// Why the URL must not be used as written, or nil. `https://user:token@host/…` and
    /// `https://token@host/…` put a credential in agent.yaml, in git's argv (which every local
    /// user can read) and in its error messages; an SSH user name (`ssh://git@host/…`) is not
    /// a secret and stays allowed.
    package static func credentialProblem(_ url: String) -> String? {
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return nil }
        let scheme = parts[0].lowercased()
        let authority = parts[1].prefix { $0 != "/" }
        guard let at = authority.lastIndex(of: "@") else { return nil }
        let userinfo = authority[..<at]
        if scheme.hasPrefix("http") || userinfo.contains(":") {
            return "the repository URL carries a credential (user information before @): remove it and put the token in a file on the node, "
                + "named by source.tokenFile (HTTPS), or use an SSH URL with source.deployKeyFile"
        }
        return nil
    }

    /// The text with the user information of every URL in it removed:
    /// `https://user:token@host/x` → `https://host/x`.
    package static func redacted(_ text: String) -> String {
        let chars = Array(text)
        var out = ""
        var i = 0
        while i < chars.count {
            out.append(chars[i])
            if i + 2 < chars.count, chars[i] == ":", chars[i + 1] == "/", chars[i + 2] == "/" {
                out += "//"
                i += 3
                // The authority runs to the next / (or space or quote); drop what precedes its last @.
                var end = i
                while end < chars.count, !"/ '\"\n".contains(chars[end]) { end += 1 }
                if let at = chars[i..<end].lastIndex(of: "@") { i = at + 1 }
                continue
            }
            i += 1
        }
        return out
    }
}
