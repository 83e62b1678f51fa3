import YAML

/// Why an off-site step failed, with a stable reason: `WrongPassword`, `NoRepository`,
/// `Unreachable`, `HostKeyMismatch`, `LoginRefused`, `DestinationFull`, `Locked`,
/// `CheckFailed`, `ResticFailed`, `SecretFile…`, `NoSnapshot`, `NotInSnapshot`.
public struct OffsiteError: Error, Sendable, CustomStringConvertible {
    public var reason: String
    public var message: String
    /// Waiting or retrying cannot help: a person must change a file or the repository.
    public var needsHuman: Bool

    public init(_ reason: String, _ message: String, needsHuman: Bool = false) {
        (self.reason, self.message, self.needsHuman) = (reason, message, needsHuman)
    }

    public var description: String { "\(reason): \(message)" }
}

/// restic (0.14, Debian 12's package) as nodeagent runs it: the repository and the key come
/// from the environment (`RESTIC_REPOSITORY`, `RESTIC_PASSWORD_FILE`), never from the command
/// line; the backend's credentials from `environmentFile`; an SFTP login through `ssh` with the
/// pinned host key only (`-o sftp.command=…`, restic's `sftp.command` option); its cache under
/// nodeagent's state directory (the service's home is read-only).
public struct Restic: Sendable {
    public let spec: OffsiteSpec
    let host: Host
    static let cacheDirectory = "/var/lib/nodeagent/offsite/cache"
    /// Variables the environment file may not set: nodeagent sets them from the spec.
    static let reserved: Set<String> = ["RESTIC_REPOSITORY", "RESTIC_REPOSITORY_FILE", "RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE",
                                        "RESTIC_PASSWORD_COMMAND", "RESTIC_CACHE_DIR", "HOME"]

    public init(spec: OffsiteSpec, host: Host) {
        self.spec = spec
        self.host = host
    }

    /// The environment restic runs with, and every secret value in it (redacted from messages).
    func environment() throws -> (env: [String: String?], secrets: [String]) {
        let source = SecretSource.files(host.files)
        var secrets: [String] = []
        do {
            guard let password = try source.read(spec.passwordFile, for: "backups.offsite.passwordFile") else { return ([:], []) }
            secrets.append(password)
            var env: [String: String?] = [
                "RESTIC_REPOSITORY": spec.repository, "RESTIC_PASSWORD_FILE": host.files.hostPath(spec.passwordFile.value),
                "RESTIC_CACHE_DIR": host.files.hostPath(Self.cacheDirectory), "RESTIC_PROGRESS_FPS": nil,
                // Nothing of the caller's restic settings leaks in.
                "RESTIC_PASSWORD": nil, "RESTIC_PASSWORD_COMMAND": nil, "RESTIC_REPOSITORY_FILE": nil, "RESTIC_KEY_HINT": nil,
            ]
            if let file = spec.environmentFile, let text = try source.read(file, for: "backups.offsite.environmentFile") {
                for (key, value) in try Self.parseEnvironment(text, file: file) {
                    env[key] = value
                    if value.count >= 4 { secrets.append(value) }
                }
            }
            if spec.isSFTP, let key = spec.sshKeyFile {
                // The key is checked like every secret file (owner, mode) before ssh reads it.
                _ = try source.read(key, for: "backups.offsite.sshKeyFile")
            }
            return (env, secrets)
        } catch let error as ReconcileError {
            throw OffsiteError(error.reason, error.message, needsHuman: true)
        }
    }

    /// `KEY=value` lines (`export ` and quotes allowed, `#` comments): the backend's variables.
    static func parseEnvironment(_ text: String, file: AbsolutePath) throws -> [(String, String)] {
        var out: [(String, String)] = []
        for (i, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = trimmed(raw, " \t\r")
            if line.isEmpty || line.hasPrefix("#") { continue }
            if line.hasPrefix("export ") { line = trimmed(line.dropFirst("export ".count), " \t") }
            guard let eq = line.firstIndex(of: "=") else {
                throw OffsiteError("EnvironmentFileInvalid", "\(file) line \(i + 1): not KEY=value (the value is not shown)", needsHuman: true)
            }
            let key = String(line[..<eq])
            var value = String(line[line.index(after: eq)...])
            guard let first = key.first, first == "_" || (first.isASCII && first.isLetter),
                  key.allSatisfy({ $0 == "_" || ($0.isASCII && ($0.isLetter || $0.isNumber)) }) else {
                // Nothing of the line is shown: it may be a pasted secret.
                throw OffsiteError("EnvironmentFileInvalid", "\(file) line \(i + 1): not a variable name before = (the line is not shown)", needsHuman: true)
            }
            guard !reserved.contains(key) else {
                throw OffsiteError("EnvironmentFileInvalid", "\(file) line \(i + 1): \(key) is set by nodeagent from backups.offsite (repository, passwordFile)",
                                   needsHuman: true)
            }
            if value.count >= 2, let q = value.first, q == "\"" || q == "'", value.last == q { value = String(value.dropFirst().dropLast()) }
            out.append((key, value))
        }
        return out
    }

    /// `-o sftp.command=ssh …`: key-only, the pinned host key only, never a prompt.
    func options() -> [String] {
        guard spec.isSFTP, let target = SFTPTarget(spec.repository), let key = spec.sshKeyFile, let known = spec.knownHostsFile else { return [] }
        // No quoting: restic parses the option as a CSV field (the spec refuses blanks, commas
        // and quotes in these paths).
        var ssh = ["ssh", "-F", "/dev/null", "-i", host.files.hostPath(key.value), "-o", "IdentitiesOnly=yes",
                   "-o", "UserKnownHostsFile=\(host.files.hostPath(known.value))", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                   "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if let port = target.port { ssh += ["-p", String(port)] }
        // ssh takes an IPv6 address without restic's brackets.
        let address = target.host.hasPrefix("[") && target.host.hasSuffix("]") ? String(target.host.dropFirst().dropLast()) : target.host
        ssh += [target.user.map { "\($0)@\(address)" } ?? address, "-s", "sftp"]
        return ["-o", "sftp.command=" + ssh.joined(separator: " ")]
    }

    /// Runs `restic ARGS` and returns its output; a failure becomes an `OffsiteError` whose
    /// message holds restic's own words (with every secret value and URL credential removed).
    @discardableResult
    func run(_ arguments: [String], doing what: String, timeout: Duration = .seconds(3600), workingDirectory: String? = nil,
             outputLimit: Int = 64 << 20) async throws -> CommandResult {
        let (env, secrets) = try environment()
        try host.files.makeDirectory(Self.cacheDirectory, mode: 0o700)
        let command = Command("restic", arguments + options(), environment: env, timeout: timeout, outputLimit: outputLimit,
                              holdsSecrets: true, workingDirectory: workingDirectory)
        let result: CommandResult
        do {
            result = try await host.commands.run(command)
        } catch {
            throw OffsiteError("ResticFailed", "\(what): \(Self.redact("\(error)", secrets))")
        }
        guard result.succeeded else {
            let error = Self.classify(result, doing: what, secrets: secrets)
            // restic may exit before it has passed on ssh's own words (a refused key, a changed
            // host key): ask ssh directly.
            if error.reason == "Unreachable", spec.isSFTP, let why = await sshDiagnosis(doing: what) { throw why }
            throw error
        }
        return result
    }

    /// ssh alone, as restic runs it, with nothing to say: its error tells a refused key or a
    /// host key that changed from a server that does not answer. nil when it connects.
    func sshDiagnosis(doing what: String) async -> OffsiteError? {
        guard let option = options().last, option.hasPrefix("sftp.command=") else { return nil }
        let argv = option.dropFirst("sftp.command=".count).split(separator: " ").map(String.init)
        guard argv.count > 1, let result = try? await host.commands.run(Command(argv[0], Array(argv.dropFirst()), input: [], timeout: .seconds(30))),
              !result.succeeded else { return nil }
        let words = result.stderr.split(whereSeparator: \.isNewline).map { trimmed($0, " \t") }.filter { !$0.isEmpty }.suffix(2).joined(separator: " / ")
        let lower = words.lowercased()
        if lower.contains("host key verification failed") || lower.contains("remote host identification has changed") {
            return OffsiteError("HostKeyMismatch", "\(what): the server's host key is not the one in knownHostsFile (ssh: \(words.prefix(300)))", needsHuman: true)
        }
        if lower.contains("permission denied") {
            return OffsiteError("LoginRefused", "\(what): the server refused sshKeyFile's key (ssh: \(words.prefix(300)))", needsHuman: true)
        }
        return OffsiteError("Unreachable", "\(what): the repository does not answer (ssh: \(words.prefix(300)))")
    }

    static func redact(_ text: String, _ secrets: [String]) -> String {
        var out = GitURL.redacted(text)
        for s in secrets where !s.isEmpty { out = out.replacing(s, with: "<redacted>") }
        return out
    }

    /// restic's failure, by what it printed (restic 0.14 exits 1 for every fatal error).
    static func classify(_ result: CommandResult, doing what: String, secrets: [String]) -> OffsiteError {
        let err = result.stderr
        let lower = err.lowercased()
        let lines = err.split(whereSeparator: \.isNewline).map { trimmed($0, " \t") }
            .filter { !$0.isEmpty && !$0.hasPrefix("repository ") }
        let said = redact(lines.suffix(2).joined(separator: " / "), secrets).prefix(400)
        let words = said.isEmpty ? result.ending : String(said)
        func e(_ reason: String, _ text: String, human: Bool = false) -> OffsiteError {
            OffsiteError(reason, "\(what): \(text) (restic: \(words))", needsHuman: human)
        }
        if lower.contains("wrong password or no key found") {
            return e("WrongPassword", "the repository does not open with passwordFile's key", human: true)
        }
        if lower.contains("host key verification failed") || lower.contains("remote host identification has changed") {
            return e("HostKeyMismatch", "the server's host key is not the one in knownHostsFile", human: true)
        }
        if lower.contains("permission denied (publickey") || lower.contains("permission denied, please try again") {
            return e("LoginRefused", "the server refused sshKeyFile's key", human: true)
        }
        // restic 0.14 adds "Is there a repository…" to any failure to read the config: only a
        // config that does not exist means no repository.
        let missing = lower.contains("no such file or directory") || lower.contains("does not exist") || lower.contains("nosuchkey")
            || lower.contains("not found")
        if lower.contains("repository does not exist") || (lower.contains("is there a repository at the following location") && missing) {
            return e("NoRepository", "there is no restic repository there (yet)")
        }
        if lower.contains("no space left") || lower.contains("quota exceeded") || lower.contains("quotaexceeded") || lower.contains("disk quota") {
            return e("DestinationFull", "the destination is full")
        }
        if lower.contains("ssh_fx_failure") {
            // OpenSSH's sftp-server says only "Failure" for a full disk (ENOSPC) among others.
            return e("WriteRefused", "the SFTP server refused a write (a full disk or a quota is the usual cause)")
        }
        if lower.contains("repository is already locked") {
            return e("Locked", "another restic process holds the repository's lock")
        }
        if lower.contains("connection refused") || lower.contains("no route to host") || lower.contains("timed out") || lower.contains("timeout")
            || lower.contains("could not resolve") || lower.contains("unable to start the sftp session") || lower.contains("connection reset")
            || lower.contains("network is unreachable") || lower.contains("dial tcp") || lower.contains("no such host") {
            return e("Unreachable", "the repository does not answer")
        }
        return e("ResticFailed", "restic failed (\(result.ending))")
    }

    // MARK: - What the repository holds

    public struct Snapshot: Sendable, Equatable {
        public var id: String
        public var shortID: String
        public var time: Timestamp
        public var hostname: String
        public var tags: [String]

        /// `holds:postgres` → "postgres"; `db:app` → "app".
        public func tagged(_ prefix: String) -> [String] {
            tags.filter { $0.hasPrefix(prefix + ":") }.map { String($0.dropFirst(prefix.count + 1)) }
        }
    }

    /// The node's snapshots, oldest first (restic's `snapshots --json`).
    public func snapshots(node: String) async throws -> [Snapshot] {
        let result = try await run(["snapshots", "--json", "--no-lock", "--host", node, "--tag", "nodeagent"], doing: "listing the off-site snapshots",
                                   timeout: .seconds(300))
        guard let json = JSONValue.parse(Array(result.stdout.utf8)) else {
            throw OffsiteError("ResticFailed", "listing the off-site snapshots: restic's answer is not JSON")
        }
        return (json.array ?? []).compactMap { s -> Snapshot? in
            guard let id = s["id"]?.string, let time = s["time"]?.string.flatMap(Timestamp.init(rfc3339:)) else { return nil }
            return Snapshot(id: id, shortID: s["short_id"]?.string ?? String(id.prefix(8)), time: time, hostname: s["hostname"]?.string ?? "",
                            tags: (s["tags"]?.array ?? []).compactMap(\.string))
        }.sorted { $0.time < $1.time }
    }
}

/// Without the leading and trailing characters of `set`.
func trimmed(_ text: some StringProtocol, _ set: String) -> String {
    var s = Substring(text)
    while let f = s.first, set.contains(f) { s = s.dropFirst() }
    while let l = s.last, set.contains(l) { s = s.dropLast() }
    return String(s)
}
