import Foundation
import Testing
import TestSupport
import Reconcilers

@Suite("RootedFileSystem on a real temp directory")
struct FileSystemTests {
    @Test func writesAtomicallyWithModeAndParents() throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.write("/etc/nodeagent/secrets/token", Array("s3cr3t\n".utf8), mode: 0o600)
        #expect(try fs.read("/etc/nodeagent/secrets/token") == Array("s3cr3t\n".utf8))
        #expect(try fs.mode("/etc/nodeagent/secrets/token") == 0o600)
        let onDisk = try String(contentsOfFile: root + "/etc/nodeagent/secrets/token", encoding: .utf8)
        #expect(onDisk == "s3cr3t\n")
        // No temp file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/etc/nodeagent/secrets") == ["token"])
    }

    @Test func writeIfChangedLeavesAnUnchangedFileAlone() throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        #expect(try fs.writeIfChanged("/etc/x.conf", [1, 2, 3], mode: 0o644))
        let inode = try FileManager.default.attributesOfItem(atPath: root + "/etc/x.conf")[.systemFileNumber] as? Int
        #expect(try !fs.writeIfChanged("/etc/x.conf", [1, 2, 3], mode: 0o644))
        #expect(try FileManager.default.attributesOfItem(atPath: root + "/etc/x.conf")[.systemFileNumber] as? Int == inode)
        // A new mode alone is a change; the rename gives the file a new inode.
        #expect(try fs.writeIfChanged("/etc/x.conf", [1, 2, 3], mode: 0o600))
        #expect(try FileManager.default.attributesOfItem(atPath: root + "/etc/x.conf")[.systemFileNumber] as? Int != inode)
    }

    @Test func aFailedWriteChangesNothing() throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.write("/etc/blocker", Array("a file, not a directory".utf8), mode: 0o644)
        #expect(throws: FileSystemError.self) { try fs.write("/etc/blocker/child.conf", [1], mode: 0o644) }
        #expect(try fs.read("/etc/blocker") == Array("a file, not a directory".utf8))
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/etc") == ["blocker"])
    }

    @Test func missingFilesReadAsNilAndRemoveIsIdempotent() throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        #expect(try fs.read("/nope") == nil)
        #expect(try fs.mode("/nope") == nil)
        try fs.remove("/nope")
        try fs.write("/yes", [], mode: 0o644)
        #expect(try fs.read("/yes") == [])
        try fs.remove("/yes")
        #expect(try fs.read("/yes") == nil)
    }
}

@Suite("SystemCommandRunner with real processes")
struct CommandRunnerTests {
    let runner = SystemCommandRunner()

    @Test func collectsExitCodeAndBothStreams() async throws {
        let r = try await runner.run(Command("/bin/sh", ["-c", "echo out; echo err >&2; exit 3"]))
        #expect(r.exitCode == 3)
        #expect(r.stdout == "out\n")
        #expect(r.stderr == "err\n")
        #expect(!r.succeeded)
    }

    /// Each command's input is an in-memory file: neither a failed start nor a child that never
    /// reads it may leave that descriptor open in a long-running agent.
    @Test func inputFilesAreClosedWhateverHappens() async throws {
        // Only the runner's input files (memfds), not the sockets and files of the tests that run
        // in this process at the same time.
        func openDescriptors() -> Int {
            ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []).filter { fd in
                ((try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) ?? "").hasPrefix("/memfd:")
            }.count
        }
        _ = try? await runner.run(Command("/nonexistent/tool", input: Array("x".utf8)))   // warm up lazily opened files
        let before = openDescriptors()
        for _ in 0..<100 {
            _ = try? await runner.run(Command("/nonexistent/tool", input: Array("secret".utf8)))
            _ = try await runner.run(Command("/bin/true", input: Array(repeating: 0x61, count: 200_000)))
        }
        // Other tests' commands run in this process too: allow their few, not 200 leaked ones.
        #expect(openDescriptors() - before < 10, "input files open before: \(before), after: \(openDescriptors())")
    }

    @Test func passesInputAndEnvironmentWithoutAShell() async throws {
        let r = try await runner.check(Command("/bin/sh", ["-c", "tr a-z A-Z; printf %s \"$SECRET\"", "x; rm -rf /"],
                                               environment: ["SECRET": "from-env"], input: Array("hello\n".utf8)))
        #expect(r.stdout == "HELLO\nfrom-env")
        let echoed = try await runner.check(Command("echo", ["$(whoami)", "a b"]))
        #expect(echoed.stdout == "$(whoami) a b\n")
    }

    @Test func checkNamesTheFailure() async throws {
        await #expect(throws: CommandError.self) { try await runner.check(Command("/bin/false")) }
        do {
            try await runner.check(Command("/bin/sh", ["-c", "echo broken config >&2; exit 1"]))
        } catch {
            #expect(error.code == .failed)
            #expect(error.description == "/bin/sh -c echo broken config >&2; exit 1: exit status 1: broken config")
        }
    }

    @Test func timeoutStopsTheWholeProcessGroup() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let pidFile = root + "/grandchild.pid"
        do {
            // A grandchild in the background, its PID written down: it must not outlive the
            // timeout. (Checked by its PID, not by waiting for it to act: a loaded machine
            // can delay the timeout itself.)
            _ = try await runner.run(Command("/bin/sh", ["-c", "sleep 60 & echo $! > \(pidFile); sleep 30"], timeout: .seconds(1)))
            Issue.record("no timeout")
        } catch {
            #expect(error.code == .timedOut)
        }
        let pid = try #require(Int32((try? String(contentsOfFile: pidFile, encoding: .utf8))?.split(separator: "\n").first ?? ""))
        // The group was killed; the grandchild, reparented, is gone once reaped.
        var alive = true
        for _ in 0..<500 where alive {
            alive = kill(pid, 0) == 0 && !((try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ") Z ").contains(") Z ")
            if alive { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(!alive, "the background grandchild \(pid) survived the timeout")
    }

    @Test func outputBeyondTheLimitIsAnErrorNotATruncation() async throws {
        await #expect(throws: CommandError.self) {
            try await runner.run(Command("/bin/sh", ["-c", "head -c 100000 /dev/zero"], outputLimit: 1000))
        }
    }

    @Test func missingExecutableIsAnError() async throws {
        do {
            _ = try await runner.run(Command("/nonexistent/tool"))
            Issue.record("ran")
        } catch {
            #expect(error.code == .notFound, "\(error)")
        }
    }
}

@Suite("SystemdServiceManager against an offline root (real systemctl)")
struct ServiceManagerTests {
    @Test func enablesAndDisablesAUnitInARoot() async throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let fs = RootedFileSystem(root: root)
        try fs.write("/etc/systemd/system/demo.service",
                     Array("[Unit]\nDescription=demo\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n".utf8),
                     mode: 0o644)
        let services = SystemdServiceManager(root: root)
        #expect(try await !services.isEnabled("demo.service"))
        // A unit not written yet is simply not enabled (systemctl says "No such file").
        #expect(try await !services.isEnabled("not-written-yet.service"))
        try await services.enable("demo.service")
        #expect(try await services.isEnabled("demo.service"))
        // The link is absolute as seen from inside the root.
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: root + "/etc/systemd/system/multi-user.target.wants/demo.service")
                == "/etc/systemd/system/demo.service")
        try await services.disable("demo.service")
        #expect(try await !services.isEnabled("demo.service"))
    }

    @Test func runtimeVerbsRefuseAnOfflineRoot() async throws {
        let services = SystemdServiceManager(root: "/tmp/nodeagent-offline-root")
        await #expect(throws: ServiceError.self) { try await services.start("k3s.service") }
        await #expect(throws: ServiceError.self) { try await services.isActive("k3s.service") }
    }
}

@Suite("ManualWallClock")
struct WallClockTests {
    @Test func sleepersWakeWhenTheClockPassesTheirDeadline() async throws {
        let clock = ManualWallClock(now: Timestamp(millisecondsSinceEpoch: 1_000_000))
        let woke = try await withThrowingTaskGroup(of: Int64.self) { group in
            for seconds in [10, 20] as [Int64] {
                group.addTask {
                    try await clock.sleep(until: Timestamp(millisecondsSinceEpoch: 1_000_000 + seconds * 1000))
                    return seconds
                }
            }
            while clock.sleeperCount < 2 { await Task.yield() }
            clock.advance(by: TimeSpan(milliseconds: 10_000))
            let first = try await group.next()
            #expect(first == 10)
            #expect(clock.sleeperCount == 1)
            clock.advance(by: TimeSpan(milliseconds: 10_000))
            return [first!] + (try await group.next().map { [$0] } ?? [])
        }
        #expect(woke == [10, 20])
        #expect(clock.now() == Timestamp(millisecondsSinceEpoch: 1_020_000))
    }

    @Test func cancellationEndsASleep() async throws {
        let clock = ManualWallClock(now: Timestamp(millisecondsSinceEpoch: 0))
        let task = Task { try await clock.sleep(until: Timestamp(millisecondsSinceEpoch: 60_000)) }
        while clock.sleeperCount < 1 { await Task.yield() }
        task.cancel()
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(clock.sleeperCount == 0)
    }

    @Test func systemClockIsNearTheRealTime() {
        // 2026-01-01 as a floor: catches a unit mistake (seconds vs milliseconds).
        #expect(SystemWallClock().now().millisecondsSinceEpoch > 1_767_225_600_000)
    }
}

@Suite("Timestamp in RFC 3339, as Kubernetes writes times")
struct TimestampTests {
    @Test func formatsAndParsesUTC() {
        #expect(Timestamp(millisecondsSinceEpoch: 0).rfc3339 == "1970-01-01T00:00:00Z")
        #expect(Timestamp(millisecondsSinceEpoch: 1_795_734_245_999).rfc3339 == "2026-11-26T23:04:05Z")
        #expect(Timestamp(millisecondsSinceEpoch: 951_782_400_000).rfc3339 == "2000-02-29T00:00:00Z")
        #expect(Timestamp(rfc3339: "2026-11-26T23:04:05Z") == Timestamp(millisecondsSinceEpoch: 1_795_734_245_000))
        #expect(Timestamp(rfc3339: "2026-11-27T00:04:05.5+01:00") == Timestamp(millisecondsSinceEpoch: 1_795_734_245_500))
        #expect(Timestamp(rfc3339: "2026-11-26 20:24:05") == nil)
        #expect(Timestamp(rfc3339: "2026-13-01T00:00:00Z") == nil)
        #expect(Timestamp(rfc3339: "2026-11-26T20:24:05Zjunk") == nil)
    }

    @Test func roundTripsEverySecondOfManyDays() {
        var ms: Int64 = -86_400_000 * 800
        while ms < 4_102_444_800_000 {   // 1967 … 2100
            let t = Timestamp(millisecondsSinceEpoch: ms)
            #expect(Timestamp(rfc3339: t.rfc3339) == t)
            ms += 86_400_000 * 7 + 3_601_000
        }
    }
}

@Suite("Atomic writes clean up after interrupted ones")
struct StaleTempTests {
    @Test func aStaleTempFileOfTheSameFileIsRemovedByTheNextWrite() throws {
        let root = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let files = RootedFileSystem(root: root)
        try files.write("/etc/app.conf", Array("one\n".utf8), mode: 0o644)
        // What a write killed before its rename leaves: an old one, a fresh one, and another file's.
        for (name, age) in [(".app.conf.nodeagent-AbC123", 3600.0), (".app.conf.nodeagent-XyZ789", 0.0), (".other.nodeagent-QqQ111", 3600.0)] {
            let path = root + "/etc/" + name
            _ = FileManager.default.createFile(atPath: path, contents: Data("partial".utf8))
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-age)], ofItemAtPath: path)
        }
        try files.write("/etc/app.conf", Array("two\n".utf8), mode: 0o644)
        let left = try FileManager.default.contentsOfDirectory(atPath: root + "/etc").sorted()
        #expect(left == [".app.conf.nodeagent-XyZ789", ".other.nodeagent-QqQ111", "app.conf"], "the old one of this file goes; a fresh one and another file's stay")
        #expect(try files.read("/etc/app.conf") == Array("two\n".utf8))
    }
}
