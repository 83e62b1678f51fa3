public import YAML

/// `spec.backups.offsite`: an encrypted, deduplicated copy of everything the node could not
/// rebuild from Git, in a restic repository off the node (restic 0.14, Debian 12's package).
/// Credentials only from files on the node: the repository key (`passwordFile`), the backend's
/// variables (`environmentFile`, such as `AWS_ACCESS_KEY_ID=…` for `s3:`), the SFTP login
/// (`sshKeyFile`, with the server's key pinned in `knownHostsFile`).
public struct OffsiteSpec: Sendable, Equatable, YAMLDecodable {
    /// restic forget's policy: a snapshot any rule keeps stays. `daily` keeps the newest
    /// snapshot of each of the last N days (one per day: several runs a day need `last`).
    public struct Keep: Sendable, Equatable, YAMLDecodable {
        public var last: Int
        public var daily: Int
        public var weekly: Int
        public var monthly: Int

        public init(last: Int = 0, daily: Int = 7, weekly: Int = 4, monthly: Int = 6) {
            (self.last, self.daily, self.weekly, self.monthly) = (last, daily, weekly, monthly)
        }

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["last", "daily", "weekly", "monthly"])
            last = try r.optional("last") ?? 0
            daily = try r.optional("daily") ?? 7
            weekly = try r.optional("weekly") ?? 4
            monthly = try r.optional("monthly") ?? 6
            try r.finish()
            for (key, value) in [("last", last), ("daily", daily), ("weekly", weekly), ("monthly", monthly)] where !(0...1000).contains(value) {
                throw context.fail(.invalidValue, "\(key) must be 0-1000 (snapshots kept)", at: r.node(key)!.mark, path: path + key)
            }
            if last + daily + weekly + monthly == 0 {
                throw context.fail(.invalidValue, "keep at least one snapshot (last, daily, weekly or monthly above 0)", at: node.mark, path: path)
            }
        }
    }

    public struct Check: Sendable, Equatable, YAMLDecodable {
        public var schedule: CronSchedule
        /// restic's `--read-data-subset`: `5%`, `1/7` or a size such as `500M`; nil: only
        /// the structure is checked, no pack is downloaded.
        public var readDataSubset: String?

        public init(schedule: CronSchedule, readDataSubset: String?) { (self.schedule, self.readDataSubset) = (schedule, readDataSubset) }

        public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
            let r = try MappingReader(node, path: path, context: context, keys: ["schedule", "readDataSubset"])
            schedule = try r.optional("schedule") ?? OffsiteSpec.defaultCheck
            readDataSubset = try r.optional("readDataSubset")
            try r.finish()
            if let subset = readDataSubset, !Self.validSubset(subset) {
                throw context.fail(.invalidValue, "readDataSubset must be a percentage (5%), a fraction n/t (1/7) or a size (500M, 2G)",
                                   at: r.node("readDataSubset")!.mark, path: path + "readDataSubset")
            }
        }

        /// What restic 0.14's `check --read-data-subset` accepts.
        public static func validSubset(_ s: String) -> Bool {
            let digits = { (t: Substring) in !t.isEmpty && t.allSatisfy(\.isASCII) && t.allSatisfy(\.isNumber) }
            if s.hasSuffix("%") {
                let n = s.dropLast()
                let parts = n.split(separator: ".", omittingEmptySubsequences: false)
                guard (1...2).contains(parts.count), parts.allSatisfy(digits), let v = Double(n) else { return false }
                return v > 0 && v <= 100
            }
            let parts = s.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 2 {
                guard parts.allSatisfy(digits), let n = Int(parts[0]), let t = Int(parts[1]) else { return false }
                return n >= 1 && n <= t
            }
            guard let unit = s.last, "KMGT".contains(unit) else { return false }
            return digits(s.dropLast()) && (Int(s.dropLast()) ?? 0) > 0
        }
    }

    /// A restic repository: a path on the node (a mounted disk), or `sftp:`, `rest:`, `s3:`,
    /// `b2:`, `azure:`, `gs:`, `swift:`, `rclone:`.
    public var repository: String
    public var passwordFile: AbsolutePath
    /// `KEY=value` lines handed to restic's environment (the backend's credentials).
    public var environmentFile: AbsolutePath?
    /// For `sftp:`: the private key of the login, and the server's host key (known_hosts format).
    public var sshKeyFile: AbsolutePath?
    public var knownHostsFile: AbsolutePath?
    public var keep: Keep
    /// When unreferenced data is removed from the repository (`restic prune`, UTC).
    public var prune: CronSchedule
    public var check: Check
    /// When to copy without a PostgreSQL section (with one, every backup run ends with the copy).
    public var schedule: CronSchedule?
    /// Other data to copy (a local-path volume), restored to the same place.
    public var paths: [AbsolutePath]

    public static let defaultCheck = try! CronSchedule(parsing: "0 5 * * 0")
    public static let defaultPrune = try! CronSchedule(parsing: "0 4 * * 0")
    public static let defaultSchedule = try! CronSchedule(parsing: "0 3 * * *")
    static let backends = ["sftp:", "rest:", "s3:", "b2:", "azure:", "gs:", "swift:", "rclone:"]

    public var isSFTP: Bool { repository.hasPrefix("sftp:") }

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context,
                                  keys: ["repository", "passwordFile", "environmentFile", "sshKeyFile", "knownHostsFile", "keep", "prune", "check",
                                         "schedule", "paths"])
        repository = try r.required("repository")
        passwordFile = try r.required("passwordFile")
        environmentFile = try r.optional("environmentFile")
        sshKeyFile = try r.optional("sshKeyFile")
        knownHostsFile = try r.optional("knownHostsFile")
        keep = try r.optional("keep") ?? Keep()
        prune = try r.optional("prune") ?? Self.defaultPrune
        check = try r.optional("check") ?? Check(schedule: Self.defaultCheck, readDataSubset: nil)
        schedule = try r.optional("schedule")
        paths = try r.optional("paths") ?? []
        try r.finish()
        let at = r.node("repository")!.mark
        if let problem = Self.repositoryProblem(repository) {
            throw context.fail(.invalidValue, problem, at: at, path: path + "repository")
        }
        if Self.carriesCredential(repository) {
            throw context.fail(.inlineSecret, "the repository carries a password (user:password@ before the host): remove it; the backend's "
                               + "credentials go in environmentFile (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY… for s3:), a file on the node. "
                               + "restic 0.14 reads a rest: server's password only from the URL: use an sftp: or s3: repository", at: at, path: path + "repository")
        }
        if isSFTP {
            // restic reads `-o sftp.command=…` as one CSV field, then splits it at blanks: a
            // path with a blank, a comma or a quote cannot be passed.
            for (key, file) in [("sshKeyFile", sshKeyFile), ("knownHostsFile", knownHostsFile)] {
                if let n = r.node(key), let value = file?.value, value.contains(where: { $0.isWhitespace || ",\"'\\".contains($0) }) {
                    throw context.fail(.invalidValue, "\(key) must not contain blanks, commas, quotes or backslashes (ssh gets it through restic's sftp.command)",
                                       at: n.mark, path: path + key)
                }
            }
            for key in ["sshKeyFile", "knownHostsFile"] where r.node(key) == nil {
                throw context.fail(.missingField, "an sftp: repository needs \(key): the login's private key and the server's pinned host key",
                                   at: node.mark, path: path + key)
            }
            guard SFTPTarget(repository) != nil else {
                throw context.fail(.invalidValue, "write an sftp repository as sftp:USER@HOST:/PATH or sftp://USER@HOST:PORT//PATH", at: at, path: path + "repository")
            }
        } else {
            for key in ["sshKeyFile", "knownHostsFile"] where r.node(key) != nil {
                throw context.fail(.conflict, "\(key) is only for an sftp: repository", at: r.node(key)!.mark, path: path + key)
            }
        }
        for (i, p) in paths.enumerated() {
            let v = p.value
            if v == "/" || ["/proc", "/sys", "/dev", "/run", "/tmp"].contains(where: { v == $0 || v.hasPrefix($0 + "/") }) {
                throw context.fail(.invalidValue, "\(v) is not data to keep: list the directories of a volume, such as /var/lib/rancher/k3s/storage",
                                   at: context.mark(for: (path + "paths").appending(index: i)), path: (path + "paths").appending(index: i))
            }
        }
    }

    static func repositoryProblem(_ repository: String) -> String? {
        if repository.isEmpty || repository.hasPrefix("-")
            || repository.unicodeScalars.contains(where: { $0.properties.isWhitespace || $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) {
            return "\"\(GitURL.redacted(repository))\" is not a restic repository"
        }
        if repository.hasPrefix("/") { return nil }
        if backends.contains(where: { repository.hasPrefix($0) }) { return nil }
        return "a repository is an absolute path or starts with one of \(backends.joined(separator: ", ")) (restic's backends)"
    }

    /// `rest:https://user:password@host/…`: a password in Git.
    static func carriesCredential(_ repository: String) -> Bool {
        let parts = repository.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { return false }
        let authority = parts[1].prefix { $0 != "/" }
        guard let at = authority.lastIndex(of: "@") else { return false }
        return authority[..<at].contains(":")
    }

    public var secretFiles: [(key: String, file: AbsolutePath)] {
        var out: [(String, AbsolutePath)] = [("passwordFile", passwordFile)]
        if let f = environmentFile { out.append(("environmentFile", f)) }
        if let f = sshKeyFile { out.append(("sshKeyFile", f)) }
        return out
    }
}

/// The login and server of an `sftp:` repository (restic's two forms:
/// `sftp:user@host:/path` and `sftp://user@host:port//path`).
struct SFTPTarget: Equatable {
    var user: String?
    var host: String
    var port: Int?

    init?(_ repository: String) {
        var rest: Substring
        if repository.hasPrefix("sftp://") {
            rest = repository.dropFirst("sftp://".count)
            guard let slash = rest.firstIndex(of: "/") else { return nil }
            var authority = rest[..<slash]
            if let at = authority.lastIndex(of: "@") { user = String(authority[..<at]); authority = authority[authority.index(after: at)...] }
            if let colon = authority.lastIndex(of: ":"), !authority.hasSuffix("]") {
                guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else { return nil }
                port = p
                authority = authority[..<colon]
            }
            host = String(authority)
        } else {
            rest = repository.dropFirst("sftp:".count)
            guard let colon = rest.firstIndex(of: ":") else { return nil }
            var authority = rest[..<colon]
            if let at = authority.lastIndex(of: "@") { user = String(authority[..<at]); authority = authority[authority.index(after: at)...] }
            host = String(authority)
        }
        let safe: (Character) -> Bool = { $0.isASCII && ($0.isLetter || $0.isNumber || "-._[]:".contains($0)) }
        guard !host.isEmpty, !host.hasPrefix("-"), host.allSatisfy(safe),
              user.map({ !$0.isEmpty && !$0.hasPrefix("-") && $0.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-._".contains($0)) } }) ?? true else {
            return nil
        }
    }
}
