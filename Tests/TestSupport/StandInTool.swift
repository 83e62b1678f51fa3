import Foundation
#if canImport(Glibc)
import Glibc
import Reconcilers
#endif

/// A misbehaving copy of a real tool (`nft`, `wg`, `pg_dump`), for fault injection: a script in
/// its own directory that runs the real program, except when its arguments contain `match`;
/// then it fails, hangs or prints garbage instead. Put `directory` first in PATH (or bind-mount
/// it over the tool's directory) and the code under test runs it like the real one.
public struct StandInTool: Sendable {
    public enum Mode: String, Sendable, CaseIterable, CustomStringConvertible {
        /// Exits 1 with an error message of the tool's kind.
        case fail
        /// Never ends, and ignores SIGTERM: only a SIGKILL to its process group stops it.
        case hang
        /// Exits 0 after printing 4 KiB of random bytes (and writing them to any `--file=`).
        case garbage
        /// Dies of SIGSEGV.
        case crash

        public var description: String { rawValue }
    }

    public let directory: String
    public let name: String
    /// One line per hanging process started: its PID.
    public var pidFile: String { directory + "/\(name).pids" }

    /// - Parameters:
    ///   - real: the real program, run for every other invocation.
    ///   - copies: more real programs to place beside it unchanged (pg_restore next to pg_dump).
    ///   - copyReal: run a copy of `real` kept in the directory, for when the directory is
    ///     bind-mounted over the real one's.
    public init(_ name: String, real: String, match: String, mode: Mode, copies: [String] = [], copyReal: Bool = false) throws {
        directory = Fixtures.temporaryDirectory()
        self.name = name
        var real = real
        if copyReal {
            try FileManager.default.copyItem(atPath: real, toPath: directory + "/\(name).real")
            real = directory + "/\(name).real"
        }
        let misbehave: String
        switch mode {
        case .fail: misbehave = "echo \"Error: stand-in \(name) refuses: $*\" >&2; exit 1"
        case .hang: misbehave = "echo $$ >> '\(directory)/\(name).pids'; trap '' TERM; while :; do sleep 1; done"
        case .garbage:
            misbehave = """
                for a in "$@"; do case "$a" in --file=*) head -c 4096 /dev/urandom > "${a#--file=}";; esac; done
                head -c 4096 /dev/urandom; exit 0
                """
        case .crash: misbehave = "kill -SEGV $$"
        }
        let script = """
            #!/bin/bash
            # Stand-in \(name) (\(mode)) for fault injection; the real one is \(real).
            case " $* " in
              *"\(match)"*) ;;
              *) exec "\(real)" "$@" ;;
            esac
            \(misbehave)

            """
        // Written with close-on-exec descriptors: a process another test thread starts at the
        // same moment must not inherit one open for writing (exec would fail with ETXTBSY).
        let files = RootedFileSystem(root: "/")
        try files.write(directory + "/" + name, Array(script.utf8), mode: 0o755)
        for program in copies {
            try files.write(directory + "/" + (program as NSString).lastPathComponent, try files.read(program) ?? [], mode: 0o755)
        }
    }

    /// PIDs of the hanging stand-ins that are still alive (none, once the caller has reaped them).
    public func survivors() -> [Int32] {
        let text = (try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { Int32($0) }.filter(Self.isRunning)
    }

    /// Alive and not a zombie (a zombie is dead, waiting only for its parent to read its status).
    static func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first != "Z"
    }

    /// How many times it hung (its PIDs written).
    public func hangs() -> Int {
        ((try? String(contentsOfFile: pidFile, encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    public func remove() {
        for pid in survivors() { kill(pid, SIGKILL) }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
