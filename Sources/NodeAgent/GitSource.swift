import Foundation
import Reconcilers
import YAML

/// One revision of the desired state, read from Git at a commit.
struct Revision: Sendable {
    var commit: String
    var platform: Platform
    /// The file as committed, to keep as the last applied revision.
    var bytes: [UInt8]
}

/// Why a revision was not taken. The node keeps the last good revision; `/status` shows this.
struct SourceError: Error, Sendable, CustomStringConvertible {
    enum Reason: String, Sendable {
        case unreachable = "Unreachable"
        case unsigned = "Unsigned"
        case historyRewrite = "HistoryRewrite"
        case fileMissing = "FileMissing"
        case invalid = "Invalid"
        case git = "GitFailed"
    }

    var reason: Reason
    var commit: String?
    var message: String
    /// For `invalid`: each problem at FILE:LINE:COL.
    var diagnostics: [Diagnostic] = []

    var description: String {
        let at = commit.map { " at \($0.prefix(12))" } ?? ""
        return "\(reason.rawValue)\(at): \(message)" + diagnostics.map { "\n" + $0.description }.joined()
    }
}

/// The desired state from a Git repository, pinned to a commit: a bare mirror under the state
/// directory, `git fetch` of the tracked ref, an optional signature check, a refusal of history
/// rewrites, and the file read with `git show COMMIT:PATH`, never from a work tree.
struct GitSource: Sendable {
    let config: AgentConfig.Source
    /// The mirror, as a path on this machine.
    let mirror: String
    let commands: any CommandRunner
    /// Where `source.tokenFile` is read.
    var files: any FileSystem = RootedFileSystem()

    static let trackedRef = "refs/nodeagent/tracked"
    static let appliedRef = "refs/nodeagent/applied"

    /// Fetches and checks the revision to apply.
    /// - Throws: `SourceError` saying why this revision must not be applied.
    func fetch() async throws(SourceError) -> Revision {
        try await ensureMirror()
        // A branch, never a tag of the same name (which would rank first and could be pushed by
        // anyone with tag rights); a full ref name is taken as given.
        let candidates = config.ref.hasPrefix("refs/") ? [config.ref] : ["refs/heads/\(config.ref)", "refs/tags/\(config.ref)"]
        var fetched: CommandResult?
        for candidate in candidates {
            let r = try await git(["fetch", "--quiet", "--force", "--no-tags", "--", config.repo, "+\(candidate):\(Self.trackedRef)"], network: true)
            fetched = r
            if r.succeeded { break }
        }
        guard let fetched, fetched.succeeded else {
            throw SourceError(reason: .unreachable, message: "git fetch \(Self.redacted(config.repo)) \(config.ref): \(Self.redacted(Self.lastLine(fetched?.stderr ?? "")))")
        }
        let commit: String
        if let pinned = config.commit {
            // A full object id, and one that the tracked ref's history really contains.
            guard let resolved = try await revParse("\(pinned)^{commit}"), resolved == pinned,
                  try await git(["merge-base", "--is-ancestor", pinned, Self.trackedRef]).succeeded else {
                throw SourceError(reason: .git, commit: pinned, message: "the pinned commit \(pinned) is not in \(config.ref)'s history as fetched")
            }
            commit = resolved
        } else {
            guard let resolved = try await revParse("\(Self.trackedRef)^{commit}") else {
                throw SourceError(reason: .git, message: "\(config.ref) does not name a commit")
            }
            commit = resolved
        }
        if let signers = config.allowedSignersFile {
            // Only the listed SSH keys count; an OpenPGP signature must be fully trusted too.
            let verified = try await git(["-c", "gpg.ssh.allowedSignersFile=\(signers)", "-c", "gpg.minTrustLevel=fully", "verify-commit", commit])
            guard verified.succeeded else {
                throw SourceError(reason: .unsigned, commit: commit,
                                  message: "the commit is not signed by a key in \(signers): \(Self.lastLine(verified.stderr))")
            }
        }
        if config.commit == nil, !config.allowHistoryRewrite, let applied = try await revParse("\(Self.appliedRef)^{commit}"),
           applied != commit {
            let descends = try await git(["merge-base", "--is-ancestor", applied, commit])
            // Fail closed: only "yes, it descends" lets the commit through.
            if descends.exitCode != 0 {
                if descends.exitCode != 1 {
                    throw SourceError(reason: .git, commit: commit, message: "cannot tell whether \(commit.prefix(12)) descends from the applied \(applied.prefix(12)): \(Self.lastLine(descends.stderr))")
                }
                throw SourceError(reason: .historyRewrite, commit: commit,
                                  message: "\(config.ref) moved to a commit that does not descend from the applied \(applied.prefix(12)) (a force-push?); roll back with git revert, or pin the commit, or set source.allowHistoryRewrite")
            }
        }
        // The entry itself first: a regular file of a sane size, not a link or a submodule
        // (git show would print a link's target, or fail, and take the blame elsewhere).
        let entry = try await git(["ls-tree", "-l", "--full-tree", commit, "--", config.path])
        let fields = entry.stdout.split(separator: "\t", maxSplits: 1).first?.split(separator: " ", omittingEmptySubsequences: true) ?? []
        if entry.succeeded, fields.count == 4 {
            switch fields[0] {
            case "120000":
                throw SourceError(reason: .invalid, commit: commit,
                                  message: "\(config.path) is a symbolic link in the commit: refused (commit the file itself)")
            case "160000":
                throw SourceError(reason: .invalid, commit: commit, message: "\(config.path) is a submodule in the commit, not a file: refused")
            case "040000":
                throw SourceError(reason: .invalid, commit: commit, message: "\(config.path) is a directory in the commit, not a file")
            default:
                if let size = Int(fields[3]), size > FileReading.maxSize {
                    throw SourceError(reason: .invalid, commit: commit,
                                      message: "\(config.path) is \(size) bytes in the commit; a desired state may be at most \(FileReading.maxSize) bytes")
                }
            }
        }
        let shown = try await git(["show", "\(commit):\(config.path)"], outputLimit: FileReading.maxSize)
        guard shown.succeeded else {
            throw SourceError(reason: .fileMissing, commit: commit, message: "\(config.path) is not in the commit: \(Self.lastLine(shown.stderr))")
        }
        let bytes = Array(shown.stdout.utf8)
        let platform: Platform
        do {
            platform = try DesiredStateLoader.load(bytes, file: config.path)
        } catch {
            throw SourceError(reason: .invalid, commit: commit, message: "\(config.path) is not a valid desired state", diagnostics: error.diagnostics)
        }
        // The node's own Git credentials are not secrets a commit may hand to the cluster.
        let own = [config.deployKeyFile, config.tokenFile, config.allowedSignersFile].compactMap { $0 }
        if let (path, file) = platform.secretFiles.first(where: { own.contains($0.file) }) {
            throw SourceError(reason: .invalid, commit: commit,
                              message: "\(path) names \(file), which is this node's own Git credential (agent.yaml): refused")
        }
        return Revision(commit: commit, platform: platform, bytes: bytes)
    }

    /// Records the commit as applied: the base the next fetch must descend from.
    func markApplied(_ commit: String) async throws(SourceError) {
        let r = try await git(["update-ref", Self.appliedRef, commit])
        guard r.succeeded else { throw SourceError(reason: .git, commit: commit, message: Self.lastLine(r.stderr)) }
    }

    /// The commit last marked applied, if any.
    func appliedCommit() async throws(SourceError) -> String? {
        try await revParse("\(Self.appliedRef)^{commit}")
    }

    private func ensureMirror() async throws(SourceError) {
        let probe = try await run(Command("git", ["-C", mirror, "rev-parse", "--is-bare-repository"]))
        if probe.succeeded { return }
        let created = try await run(Command("git", ["init", "--quiet", "--bare", mirror]))
        guard created.succeeded else { throw SourceError(reason: .git, message: "git init \(mirror): \(Self.lastLine(created.stderr))") }
    }

    private func revParse(_ expression: String) async throws(SourceError) -> String? {
        let r = try await git(["rev-parse", "--verify", "--quiet", expression])
        return r.succeeded ? r.stdout.split(separator: "\n").first.map(String.init) : nil
    }

    private func git(_ arguments: [String], network: Bool = false, outputLimit: Int = 1 << 20) async throws(SourceError) -> CommandResult {
        var environment: [String: String?] = ["GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "LC_ALL": "C"]
        if network, let tokenFile = config.tokenFile {
            // The token reaches git through its environment (GIT_CONFIG_*: only root can read a
            // root process's environment), never through argv, the URL or a file git writes.
            let token: [UInt8]?
            do {
                token = try files.readSecret(tokenFile.value, limit: 64 << 10)
            } catch {
                throw SourceError(reason: .unreachable, message: "source.tokenFile: \(error.description)")
            }
            guard let token, let line = String(decoding: token, as: UTF8.self).split(whereSeparator: \.isNewline).first, !line.isEmpty else {
                throw SourceError(reason: .unreachable, message: "source.tokenFile \(tokenFile) does not exist or is empty")
            }
            let basic = Data("\(config.tokenUser):\(line)".utf8).base64EncodedString()
            environment["GIT_CONFIG_COUNT"] = "1"
            environment["GIT_CONFIG_KEY_0"] = "http.extraHeader"
            environment["GIT_CONFIG_VALUE_0"] = "Authorization: Basic \(basic)"
        }
        if network, let key = config.deployKeyFile {
            // GIT_SSH_COMMAND goes through a shell: the path is quoted (AgentConfig refuses a ').
            environment["GIT_SSH_COMMAND"] = "ssh -i '\(key)' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=accept-new"
        }
        return try await run(Command("git", ["-C", mirror] + arguments, environment: environment,
                                     timeout: network ? .seconds(120) : .seconds(30), outputLimit: outputLimit))
    }

    private func run(_ command: Command) async throws(SourceError) -> CommandResult {
        do {
            return try await commands.run(command)
        } catch {
            throw SourceError(reason: .git, message: error.description)
        }
    }

    static func redacted(_ text: String) -> String { GitURL.redacted(text) }

    static func lastLine(_ text: String) -> String {
        text.split(separator: "\n").last.map(String.init) ?? "(no output)"
    }
}
