import Foundation
import Testing
import TestSupport
import Reconcilers
import YAML
@testable import NodeAgent

/// The Git source against real repositories that each test makes.
@Suite("Git source (real git, file:// repositories)", .serialized)
struct GitSourceTests {
    final class Repo: @unchecked Sendable {
        let dir = Fixtures.temporaryDirectory()
        var work: String { dir + "/work" }
        var mirror: String { dir + "/state/source.git" }
        let runner = SystemCommandRunner()

        init() async throws {
            try await git(["init", "--quiet", "--initial-branch=main", work], inRepo: false)
        }

        deinit { try? FileManager.default.removeItem(atPath: dir) }

        @discardableResult
        func git(_ args: [String], inRepo: Bool = true) async throws -> CommandResult {
            try await runner.check(Command("git", (inRepo ? ["-C", work] : []) + ["-c", "user.name=Test", "-c", "user.email=test@example.com"] + args,
                                           environment: ["GIT_CONFIG_NOSYSTEM": "1", "HOME": dir]))
        }

        /// Commits `text` as platform.yaml; returns the commit id.
        @discardableResult
        func commit(_ text: String, message: String = "change", extra: [String] = []) async throws -> String {
            try text.write(toFile: work + "/platform.yaml", atomically: true, encoding: .utf8)
            try await git(["add", "platform.yaml"])
            try await git(extra + ["commit", "--quiet", "--allow-empty", "-m", message])
            return try await git(["rev-parse", "HEAD"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func source(commit: String? = nil, signers: String? = nil, allowRewrite: Bool = false, repo: String? = nil) -> GitSource {
            GitSource(config: AgentConfig.Source(repo: repo ?? "file://\(work)", ref: "main", commit: commit, path: "platform.yaml",
                                                 deployKeyFile: nil,
                                                 allowedSignersFile: signers.map { try! AbsolutePath(parsing: $0) },
                                                 allowHistoryRewrite: allowRewrite),
                      mirror: mirror, commands: runner)
        }
    }

    static func platform(_ name: String) -> String {
        "apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: \(name)}\nspec: {}\n"
    }

    func failure(_ source: GitSource) async -> SourceError? {
        do {
            _ = try await source.fetch()
            return nil
        } catch {
            return error
        }
    }

    @Test func readsTheFileAtTheFetchedCommit() async throws {
        let repo = try await Repo()
        let first = try await repo.commit(Self.platform("one"))
        let revision = try await repo.source().fetch()
        #expect(revision.commit == first)
        #expect(revision.platform.name.value == "one")
        // An edit in the work tree that is not committed is not the desired state.
        try Self.platform("uncommitted").write(toFile: repo.work + "/platform.yaml", atomically: true, encoding: .utf8)
        #expect(try await repo.source().fetch().platform.name.value == "one")
        let second = try await repo.commit(Self.platform("two"))
        #expect(try await repo.source().fetch().commit == second)
        // Pinned: the older commit holds, whatever main says.
        #expect(try await repo.source(commit: first).fetch().platform.name.value == "one")
    }

    @Test func aTagNamedLikeTheBranchDoesNotWinAndPinsMustBeInTheHistory() async throws {
        let repo = try await Repo()
        try await repo.commit(Self.platform("base"))
        let onMain = try await repo.commit(Self.platform("main-tip"))
        // Elsewhere, a commit tagged "main": git would rank refs/tags/main above refs/heads/main.
        try await repo.git(["checkout", "--quiet", "-b", "side", "HEAD~1"])
        let side = try await repo.commit(Self.platform("from-a-tag"))
        try await repo.git(["tag", "main"])
        try await repo.git(["checkout", "--quiet", "main"])
        #expect(try await repo.source().fetch().commit == onMain)
        // A pin must be a commit of the tracked branch's history.
        let error = await failure(repo.source(commit: side))
        #expect(error?.reason == .git)
        #expect(error?.message.contains("is not in main's history") == true)
        #expect(try await repo.source(commit: onMain).fetch().platform.name.value == "main-tip")
    }

    @Test func anInvalidFileIsRefusedWithItsPosition() async throws {
        let repo = try await Repo()
        try await repo.commit(Self.platform("good"))
        try await repo.commit("apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: bad}\nspec:\n  firewal: {}\n")
        let error = await failure(repo.source())
        #expect(error?.reason == .invalid)
        #expect(error?.diagnostics.first?.description == "platform.yaml:5:3: error: spec.firewal: unknown key \"firewal\" (did you mean \"firewall\"?)")
    }

    @Test func anUnreachableRemoteIsSaidSo() async throws {
        let repo = try await Repo()
        let error = await failure(repo.source(repo: "file:///nonexistent/repository.git"))
        #expect(error?.reason == .unreachable)
    }

    /// Hostile commits: the state file as a symbolic link, a submodule, a directory, or far too
    /// big. Each is refused with its reason; the last good revision stays what the agent has.
    @Test func hostileCommitsAreRefusedWithTheReason() async throws {
        let repo = try await Repo()
        let good = try await repo.commit(Self.platform("good"))
        let source = repo.source()
        #expect(try await source.fetch().commit == good)
        try await source.markApplied(good)
        func expectRefused(_ contains: String) async {
            let error = await failure(source)
            #expect(error?.reason == .invalid, "\(String(describing: error))")
            #expect(error?.message.contains(contains) == true, "\(String(describing: error))")
            #expect(try! await source.appliedCommit() == good, "the last good revision is kept")
        }
        // A symbolic link to a file outside the repository.
        try FileManager.default.removeItem(atPath: repo.work + "/platform.yaml")
        try FileManager.default.createSymbolicLink(atPath: repo.work + "/platform.yaml", withDestinationPath: "/etc/shadow")
        try await repo.git(["add", "platform.yaml"])
        try await repo.git(["commit", "--quiet", "-m", "link"])
        await expectRefused("platform.yaml is a symbolic link in the commit")
        // A submodule (a gitlink) where the file should be.
        try await repo.git(["rm", "--quiet", "--cached", "platform.yaml"])
        try FileManager.default.removeItem(atPath: repo.work + "/platform.yaml")
        try await repo.git(["update-index", "--add", "--cacheinfo", "160000,\(good),platform.yaml"])
        try await repo.git(["commit", "--quiet", "-m", "submodule"])
        await expectRefused("platform.yaml is a submodule in the commit")
        // A directory.
        try await repo.git(["rm", "--quiet", "--cached", "platform.yaml"])
        try FileManager.default.createDirectory(atPath: repo.work + "/platform.yaml", withIntermediateDirectories: true)
        try "x".write(toFile: repo.work + "/platform.yaml/inner", atomically: true, encoding: .utf8)
        try await repo.git(["add", "platform.yaml/inner"])
        try await repo.git(["commit", "--quiet", "-m", "directory"])
        await expectRefused("platform.yaml is a directory in the commit")
        // 17 MiB of YAML comments.
        try await repo.git(["rm", "--quiet", "-r", "platform.yaml"])
        let huge = Self.platform("huge") + String(repeating: "# padding padding padding padding padding padding padding\n", count: 17 * 1024 * 1024 / 58 + 1)
        try await repo.commit(huge, message: "huge")
        await expectRefused("a desired state may be at most \(FileReading.maxSize) bytes")
    }

    @Test func aForcePushThatRewritesAppliedHistoryIsRefused() async throws {
        let repo = try await Repo()
        try await repo.commit(Self.platform("base"))
        let applied = try await repo.commit(Self.platform("applied"))
        let source = repo.source()
        _ = try await source.fetch()
        try await source.markApplied(applied)
        // Someone rewrites main so the applied commit is no longer in its history.
        try await repo.git(["reset", "--quiet", "--hard", "HEAD~1"])
        try await repo.commit(Self.platform("rewritten"))
        #expect(await failure(source)?.reason == .historyRewrite)
        #expect(try await repo.source(allowRewrite: true).fetch().platform.name.value == "rewritten")
        // A normal commit on top of the applied one is fine.
        try await repo.git(["reset", "--quiet", "--hard", applied])
        try await repo.commit(Self.platform("forward"))
        #expect(try await source.fetch().platform.name.value == "forward")
    }

    @Test func onlyCommitsSignedByAnAllowedKeyApply() async throws {
        let repo = try await Repo()
        let runner = SystemCommandRunner()
        for name in ["trusted", "stranger"] {
            try await runner.check(Command("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", "\(repo.dir)/\(name)"]))
        }
        let trustedKey = try String(contentsOfFile: repo.dir + "/trusted.pub", encoding: .utf8)
        try "ops@example.com \(trustedKey)".write(toFile: repo.dir + "/allowed_signers", atomically: true, encoding: .utf8)
        let signers = repo.dir + "/allowed_signers"
        func signed(_ key: String) -> [String] {
            ["-c", "gpg.format=ssh", "-c", "user.signingkey=\(repo.dir)/\(key)", "-c", "commit.gpgsign=true"]
        }
        try await repo.commit(Self.platform("signed"), extra: signed("trusted"))
        #expect(try await repo.source(signers: signers).fetch().platform.name.value == "signed")
        try await repo.commit(Self.platform("unsigned"))
        let unsigned = await failure(repo.source(signers: signers))
        #expect(unsigned?.reason == .unsigned)
        try await repo.commit(Self.platform("stranger"), extra: signed("stranger"))
        #expect(await failure(repo.source(signers: signers))?.reason == .unsigned)
        // Without signers configured, the same commit is taken.
        #expect(try await repo.source().fetch().platform.name.value == "stranger")
    }

    @Test func agentConfigErrorsNameTheirSpot() {
        let text = """
            apiVersion: nodeagent/v1
            kind: AgentConfig
            source:
              repo: https://git.example.com/platform.git
              ref: main
              commit: "not-a-sha"
            intervals: {poll: 60s, drift: 5m}

            """
        do {
            _ = try AgentConfig.parse(Array(text.utf8), file: "agent.yaml")
            Issue.record("accepted")
        } catch {
            #expect(error.diagnostics.first?.description == "agent.yaml:6:11: error: source.commit: commit must be a full commit id (40 lowercase hexadecimal digits)")
        }
        let good = try? AgentConfig.parse(Array(text.replacingOccurrences(of: "  commit: \"not-a-sha\"\n", with: "").utf8), file: "agent.yaml")
        #expect(good?.source.ref == "main" && good?.poll == TimeSpan(milliseconds: 60_000) && good?.stateDirectory.value == "/var/lib/nodeagent")
    }
}

@Suite("nodeagent source (the real binary)", .serialized)
struct SourceCommandTests {
    @Test func showsWhatTheAgentWouldTakeAndWhyNot() async throws {
        let repo = try await GitSourceTests.Repo()
        let commit = try await repo.commit(GitSourceTests.platform("vps-9"))
        let config = repo.dir + "/agent.yaml"
        try """
            apiVersion: nodeagent/v1
            kind: AgentConfig
            source: {repo: "file://\(repo.work)", ref: main, path: platform.yaml}
            stateDirectory: \(repo.dir)/state

            """.write(toFile: config, atomically: true, encoding: .utf8)
        let ok = try await Binary.run(["source", "--config", config])
        #expect(ok.exitCode == 0, "\(ok.stderr)")
        #expect(ok.stdout == "file://\(repo.work) main → \(commit.prefix(12)): platform.yaml is valid (vps-9); nothing applied yet\n")
        try await repo.commit("apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: x}\nspec: {os: {ssh: {port: 0}}}\n")
        let bad = try await Binary.run(["source", "--config", config, "-o", "json"])
        #expect(bad.exitCode == 1)
        let json = try #require(JSONValue.parse(Array(bad.stdout.utf8)))
        #expect(json["reason"]?.string == "Invalid")
        #expect(json["errors"]?.array?.first?["line"]?.int == 4)
        let validated = try await Binary.run(["validate", config, Fixtures.repository + "/examples/agent.yaml"])
        #expect(validated.exitCode == 0, "\(validated.stderr)")
        #expect(validated.stdout.contains("agent.yaml: OK (agent config: https://git.example.com/platform.git main)"))
    }
}

@Suite("Git source: messages never show credentials")
struct RedactionTests {
    @Test(arguments: [
        ("git fetch https://jules:tok3n@git.example.com/p.git main", "git fetch https://git.example.com/p.git main"),
        ("fatal: unable to access 'https://u:p@h/x/': error", "fatal: unable to access 'https://h/x/': error"),
        ("ssh://git@host/repo", "ssh://host/repo"),
        ("file:///srv/repo", "file:///srv/repo"),
    ])
    func userInformationIsRemoved(text: String, expected: String) {
        #expect(GitSource.redacted(text) == expected)
    }
}
