import Foundation
import Testing
import TestSupport
import Reconcilers
import YAML
import Synchronization

/// A small real reconciler for the contract's tests: it keeps `/etc/motd` saying the node's
/// name, through the real `RootedFileSystem`.
struct MotdReconciler: Reconciler {
    static let name = ReconcilerName.os
    static let dependencies: [ReconcilerName] = []
    let files: any FileSystem
    var owns: [OwnedResource] { [.file("/etc/motd")] }

    func desired(from platform: Platform) -> String? {
        platform.spec.os == nil ? nil : "Welcome to \(platform.name)\n"
    }

    func observe(_ desired: String) async throws -> [UInt8]? { try files.read("/etc/motd") }

    func plan(_ desired: String, _ observed: [UInt8]?) throws -> [Change] {
        let after = Array(desired.utf8)
        guard observed != after else { return [] }
        return [Change(observed == nil ? .create : .update, "file /etc/motd",
                       operation: .writeFile(path: "/etc/motd", before: observed, after: after, mode: 0o644))]
    }

    func apply(_ changes: [Change], desired: String) async throws {
        for change in changes {
            if case .writeFile(let path, _, let after, let mode) = change.operation {
                try files.write(path, after, mode: mode)
            }
        }
    }

    func verify(_ desired: String) async throws -> Condition {
        try files.read("/etc/motd") == Array(desired.utf8) ? .ready() : Condition(.failed, reason: "Mismatch")
    }
}

/// Fails every pass, to show that a failure blocks dependents only.
struct BrokenFirewall: Reconciler {
    static let name = ReconcilerName.firewall
    static let dependencies: [ReconcilerName] = [.os]
    var owns: [OwnedResource] { [.nftablesTable("inet nodeagent")] }
    func desired(from platform: Platform) -> Bool? { platform.spec.firewall == nil ? nil : true }
    func observe(_ desired: Bool) async throws -> Bool {
        throw ReconcileError(.stalled, reason: "NftMissing", "nft is not installed")
    }
    func plan(_ desired: Bool, _ observed: Bool) throws -> [Change] { [] }
    func apply(_ changes: [Change], desired: Bool) async throws {}
    func verify(_ desired: Bool) async throws -> Condition { .ready() }
}

/// Depends on the firewall; records that it ran by writing a file.
struct WireGuardProbe: Reconciler {
    static let name = ReconcilerName.wireguard
    static let dependencies: [ReconcilerName] = [.firewall]
    let files: any FileSystem
    var owns: [OwnedResource] { [.file("/etc/wireguard/wg0.conf")] }
    func desired(from platform: Platform) -> Bool? { platform.spec.wireguard == nil ? nil : true }
    func observe(_ desired: Bool) async throws -> [UInt8]? { try files.read("/etc/wireguard/wg0.conf") }
    func plan(_ desired: Bool, _ observed: [UInt8]?) throws -> [Change] {
        observed == nil ? [Change(.create, "file /etc/wireguard/wg0.conf", operation: .writeFile(path: "/etc/wireguard/wg0.conf", before: nil, after: [0x23], mode: 0o600))] : []
    }
    func apply(_ changes: [Change], desired: Bool) async throws { try files.write("/etc/wireguard/wg0.conf", [0x23], mode: 0o600) }
    func verify(_ desired: Bool) async throws -> Condition { .ready() }
}

@Suite("Engine: plan and apply through the Reconciler contract")
struct EngineTests {
    func platform(_ spec: String) throws -> Platform {
        try DesiredStateLoader.load(Array("apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: vps-1}\nspec:\n\(spec)".utf8), file: "e.yaml")
    }

    @Test func planHasNoSideEffectsAndApplyConverges() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        let engine = try Engine([AnyReconciler(MotdReconciler(files: fs))])
        let p = try platform("  os: {}\n")

        let plan = await engine.plan(p, only: [.os])
        guard case .planned(let changes) = plan.first?.outcome else { Issue.record("\(plan)"); return }
        #expect(changes.map(\.description) == ["+ file /etc/motd\n    +Welcome to vps-1"])
        #expect(try fs.read("/etc/motd") == nil, "plan wrote a file")

        let applied = await engine.apply(p, only: [.os])
        #expect(applied.first?.outcome == .applied(changes, .ready()))
        #expect(try fs.read("/etc/motd") == Array("Welcome to vps-1\n".utf8))

        let again = await engine.plan(p, only: [.os])
        #expect(again.first?.outcome == .planned([]))
    }

    @Test func driftShowsAsALineDiffAndIsRepaired() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.write("/etc/motd", Array("hand edit\nWelcome\n".utf8), mode: 0o644)
        let engine = try Engine([AnyReconciler(MotdReconciler(files: fs))])
        let p = try platform("  os: {}\n")
        let plan = await engine.plan(p, only: [.os])
        guard case .planned(let changes) = plan.first?.outcome else { Issue.record("\(plan)"); return }
        #expect(changes.map(\.description) == ["~ file /etc/motd\n    -hand edit\n    -Welcome\n    +Welcome to vps-1"])
        _ = await engine.apply(p, only: [.os])
        #expect(try fs.read("/etc/motd") == Array("Welcome to vps-1\n".utf8))
    }

    @Test func aFailureBlocksDependentsOnlyAndUnhandledSectionsAreNamed() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        // Registered out of order on purpose: the engine sorts by dependency.
        let engine = try Engine([AnyReconciler(WireGuardProbe(files: fs)), AnyReconciler(BrokenFirewall()),
                                 AnyReconciler(MotdReconciler(files: fs))])
        #expect(engine.reconcilers.map(\.name) == [.os, .firewall, .wireguard])
        let p = try platform("  os: {}\n  firewall: {publicInterface: eth0}\n  wireguard: {address: 10.8.0.1/24}\n  k3s: {version: v1.31.4+k3s1, sha256: \"\(String(repeating: "a", count: 64))\"}\n")
        let entries = await engine.apply(p)
        #expect(entries.map(\.name) == [.os, .firewall, .wireguard, .k3s])
        #expect(entries[0].outcome == .applied(entries[0].outcome.changes, .ready()))
        #expect(entries[1].outcome == .failed(Condition(.stalled, reason: "NftMissing", message: "nft is not installed")))
        #expect(entries.verdict == .stalled && entries.names(.stalled) == [.firewall] && entries.names(.blocked) == [.wireguard], "a person must act; the blocked one is not the cause")
        #expect(!entries.converged && !entries.doneAsAsked && entries.map(\.outcome.verdict) == [.converged, .stalled, .blocked, .notHandled])
        #expect(entries[2].outcome == .blocked(by: .firewall))
        #expect(entries[3].outcome == .notHandled(section: "k3s"))
        #expect(try fs.read("/etc/wireguard/wg0.conf") == nil, "a blocked reconciler ran")
        #expect(try fs.read("/etc/motd") != nil)
    }

    @Test func undeclaredSectionsAreLeftAlone() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let engine = try Engine([AnyReconciler(MotdReconciler(files: RootedFileSystem(root: root)))])
        let entries = await engine.apply(try platform("  {}\n"))
        #expect(entries.map(\.outcome) == [.notDeclared])
    }

    @Test func twoOwnersOfOneResourceAreRefused() throws {
        let fs = RootedFileSystem(root: "/nonexistent")
        #expect(throws: Engine.SetupError.self) {
            try Engine([AnyReconciler(MotdReconciler(files: fs)), AnyReconciler(OtherMotd(files: fs))])
        }
    }

    @Test func privateFilesArePlannedWithoutTheirContent() {
        let change = Change(.create, "file /etc/nodeagent/secrets/wg0.key",
                            operation: .writeFile(path: "/etc/nodeagent/secrets/wg0.key", before: nil, after: Array("KEY".utf8), mode: 0o600))
        #expect(change.description == "+ file /etc/nodeagent/secrets/wg0.key\n    (contents not shown: the file is private, mode 600)")
    }
}

struct OtherMotd: Reconciler {
    static let name = ReconcilerName.k3s
    static let dependencies: [ReconcilerName] = []
    let files: any FileSystem
    var owns: [OwnedResource] { [.file("/etc/motd")] }
    func desired(from platform: Platform) -> Bool? { nil }
    func observe(_ desired: Bool) async throws -> Bool { true }
    func plan(_ desired: Bool, _ observed: Bool) throws -> [Change] { [] }
    func apply(_ changes: [Change], desired: Bool) async throws {}
    func verify(_ desired: Bool) async throws -> Condition { .ready() }
}

extension Engine.Outcome {
    var changes: [Change] {
        switch self {
        case .planned(let c), .applied(let c, _): return c
        default: return []
        }
    }
}

@Suite("TextDiff")
struct TextDiffTests {
    @Test(arguments: [
        ("a\nb\nc\n", "a\nc\n", ["-b"]),
        ("", "x\n", ["+x"]),
        ("a\nb\n", "a\nB\nc\n", ["-b", "+B", "+c"]),
        ("same\n", "same\n", []),
    ] as [(String, String, [String])])
    func linesAddedAndRemoved(before: String, after: String, expected: [String]) {
        #expect(TextDiff.lines(from: Array(before.utf8), to: Array(after.utf8)) == expected)
    }
}

/// Progressing until a file appears; counts how often it was verified.
final class SlowInstall: Reconciler, @unchecked Sendable {
    static let name = ReconcilerName.helm
    static let dependencies: [ReconcilerName] = []
    let files: any FileSystem
    let verifications = Mutex<Int>(0)
    init(files: any FileSystem) { self.files = files }
    var owns: [OwnedResource] { [.file("/done")] }
    func desired(from platform: Platform) -> Bool? { true }
    func observe(_ desired: Bool) async throws -> Bool { false }
    func plan(_ desired: Bool, _ observed: Bool) throws -> [Change] { [Change(.run, "install", operation: .runCommand(["true"]))] }
    func apply(_ changes: [Change], desired: Bool) async throws {}
    func verify(_ desired: Bool) async throws -> Condition {
        verifications.withLock { $0 += 1 }
        return try files.read("/done") == nil ? Condition(.progressing, reason: "Installing") : .ready()
    }
}

@Suite struct EngineSettleTests {
    /// `--wait` settles on the engine's clock: a test advances it instead of sleeping.
    @Test func settlingWaitsOnTheInjectedClock() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let files = RootedFileSystem(root: root)
        let clock = ManualWallClock(now: Timestamp(millisecondsSinceEpoch: 1_000_000))
        let install = SlowInstall(files: files)
        let engine = try Engine([AnyReconciler(install)], clock: clock)
        let platform = try DesiredStateLoader.load(Array("apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: n}\nspec: {}\n".utf8), file: "e.yaml")
        let pass = Task { await engine.apply(platform, settle: .seconds(60)) }
        // The first verify, then the engine sleeps on the manual clock.
        while clock.sleeperCount == 0 { await Task.yield() }
        #expect(install.verifications.withLock { $0 } == 1)
        clock.advance(by: TimeSpan(milliseconds: 2000))
        while clock.sleeperCount == 0 || install.verifications.withLock({ $0 }) < 2 { await Task.yield() }
        try files.write("/done", [1], mode: 0o644)
        clock.advance(by: TimeSpan(milliseconds: 2000))
        let entries = await pass.value
        #expect(entries.first?.outcome == .applied([Change(.run, "install", operation: .runCommand(["true"]))], .ready()))
        #expect(install.verifications.withLock { $0 } == 3)
    }
}
