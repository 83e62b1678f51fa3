import Foundation
import Testing
import TestSupport
import Reconcilers

/// Runs the real `nodeagent` binary that `swift build` put beside this test bundle.
enum Binary {
    static let path: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = URL(fileURLWithPath: exe).deletingLastPathComponent()
        if dir.lastPathComponent == "MacOS" || dir.path.hasSuffix(".xctest/Contents") { dir.deleteLastPathComponent() }
        return dir.appendingPathComponent("nodeagent").path
    }()

    static func run(_ arguments: [String]) async throws -> CommandResult {
        #expect(FileManager.default.isExecutableFile(atPath: path), "build the package first: \(path) is missing")
        return try await SystemCommandRunner().run(Command(path, arguments, timeout: .seconds(30)))
    }
}

@Suite("nodeagent validate / plan / apply (the real binary)")
struct CLITests {
    @Test(arguments: Fixtures.invalid)
    func validateNamesFileLineAndColumn(_ e: Fixtures.Expectation) async throws {
        let file = Fixtures.desiredState + "/invalid/" + e.file
        let r = try await Binary.run(["validate", file])
        #expect(r.exitCode == 1)
        #expect(r.stdout == "")
        let first = try #require(r.stderr.split(separator: "\n").first.map(String.init))
        let prefix = "\(file):\(e.line):\(e.column): error: " + (e.path.isEmpty ? "" : "\(e.path): ")
        #expect(first.hasPrefix(prefix), "got: \(first)")
        #expect(first.contains(e.message))
    }

    @Test func validateAcceptsEveryValidFileAtOnce() async throws {
        let r = try await Binary.run(["validate"] + Fixtures.valid)
        #expect(r.exitCode == 0, "\(r.stderr)")
        #expect(r.stderr == "")
        #expect(r.stdout.split(separator: "\n").count == Fixtures.valid.count)
        #expect(r.stdout.contains("examples/platform.yaml: OK (vps-1: alerting, argocd, backups, firewall, helmReleases, k3s, os, status, wireguard)"))
    }

    @Test func oneBadFileAmongGoodOnesFailsTheRun() async throws {
        let bad = Fixtures.desiredState + "/invalid/lockout-ssh.yaml"
        let r = try await Binary.run(["validate", Fixtures.example, bad])
        #expect(r.exitCode == 1)
        #expect(r.stdout.contains("platform.yaml: OK"))
        #expect(r.stderr.contains("lockout-ssh.yaml:9:19: error: spec.firewall.public.tcp: the SSH port 2222 must stay"))
    }

    @Test func validateJSONIsMachineReadable() async throws {
        let bad = Fixtures.desiredState + "/invalid/unknown-key-typo.yaml"
        let r = try await Binary.run(["validate", "-o", "json", Fixtures.example, bad])
        #expect(r.exitCode == 1)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        #expect(json.count == 2)
        #expect(json[0]["valid"] as? Bool == true)
        #expect(json[1]["valid"] as? Bool == false)
        let error = try #require((json[1]["errors"] as? [[String: Any]])?.first)
        #expect(error["line"] as? Int == 7)
        #expect(error["column"] as? Int == 5)
        #expect(error["code"] as? String == "unknownKey")
        #expect(error["path"] as? String == "spec.wireguard.listenport")
    }

    @Test func validateRefusesAMissingFile() async throws {
        let r = try await Binary.run(["validate", "/nonexistent/platform.yaml"])
        #expect(r.exitCode == 1)
        #expect(r.stderr.hasPrefix("/nonexistent/platform.yaml:1:1: error: cannot open: No such file or directory"))
    }

    // These tests run the binary on this machine itself, so they select only reconcilers that
    // touch nothing here; the host reconcilers are tested inside network namespaces and temp
    // roots (HostReconcilerTests).
    @Test func planOfAClusterSectionWithoutAClusterSaysWhy() async throws {
        let k = ["--kubeconfig", "/nonexistent/k3s.yaml"]
        let r = try await Binary.run(["plan", "--state", Fixtures.example, "--only", "alerting"] + k)
        #expect(r.exitCode == 1, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("alerting: Progressing: NoKubeconfig: /nonexistent/k3s.yaml does not exist yet"), "\(r.stdout)")
        let only = try await Binary.run(["plan", "--state", Fixtures.example, "--only", "alerting", "-o", "json"] + k)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(only.stdout.utf8)) as? [String: Any])
        let names = (json["reconcilers"] as? [[String: Any]])?.compactMap { $0["name"] as? String }
        #expect(names == ["alerting"])
    }

    @Test func planRefusesAnInvalidStateWithExitOne() async throws {
        let r = try await Binary.run(["plan", "--state", Fixtures.desiredState + "/invalid/k3s-version.yaml"])
        #expect(r.exitCode == 1)
        #expect(r.stdout == "")
        #expect(r.stderr.contains("k3s-version.yaml:6:14: error: spec.k3s.version:"))
    }

    @Test func usageErrorsExitOneWithAHint() async throws {
        let r = try await Binary.run(["plan", "--state", Fixtures.example, "--only", "firewal"])
        #expect(r.exitCode == 1)
        #expect(r.stderr.contains("unknown reconciler \"firewal\" (did you mean \"firewall\"?)"))
    }

    @Test func applyExitsOneUntilEverySelectedSectionConverged() async throws {
        let minimal = try await Binary.run(["apply", "--state", Fixtures.desiredState + "/valid/minimal.yaml"])
        #expect(minimal.exitCode == 0, "\(minimal.stderr)")
        let waiting = try await Binary.run(["apply", "--state", Fixtures.example, "--only", "alerting", "--kubeconfig", "/nonexistent/k3s.yaml"])
        #expect(waiting.exitCode == 1)
        #expect(waiting.stderr.contains("error: not converged: alerting (Progressing: NoKubeconfig:"), "\(waiting.stderr)")
    }

    @Test func versionPrints() async throws {
        let r = try await Binary.run(["version"])
        #expect(r.exitCode == 0)
        #expect(r.stdout.hasPrefix("nodeagent "))
    }
}
