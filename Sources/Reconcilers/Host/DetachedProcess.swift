#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// Starts a program in a new session that outlives nodeagent: the firewall's revert timer
/// must fire even if nodeagent is killed in the middle of a change.
public enum DetachedProcess {
    /// glibc's POSIX_SPAWN_SETSID (2.26+); the header declares it only under _GNU_SOURCE,
    /// which Swift's Glibc module does not see.
    static let spawnSetsid: Int16 = 0x80
    static let spawnSetSignalDefaults: Int16 = 0x04
    static let spawnSetSignalMask: Int16 = 0x08
    /// glibc's posix_spawn_file_actions_addclosefrom_np (2.34+; Debian 12 has 2.36), behind
    /// _GNU_SOURCE as well: found once by name in the loaded libc.
    static let addCloseFrom: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? =
        dlsym(nil, "posix_spawn_file_actions_addclosefrom_np")
            .map { unsafeBitCast($0, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self) }

    /// - Parameters:
    ///   - output: a file that receives stdout and stderr (appended, created 0600); nil for /dev/null.
    ///   - environment: extra `NAME=value` entries on top of nodeagent's environment.
    /// - Returns: the process id, which is also its process-group id.
    public static func spawn(_ argv: [String], output: String? = nil, environment: [String] = []) throws(CommandError) -> Int32 {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A thread of the Swift runtime may have signals blocked; a child inherits that mask,
        // and a revert timer that cannot receive SIGTERM cannot be disarmed. Start it clean.
        posix_spawnattr_setflags(&attributes, Self.spawnSetsid | Self.spawnSetSignalMask | Self.spawnSetSignalDefaults)
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        // Nothing but 0–2 goes with it: a process that outlives its parent must not hold the
        // parent's pipes (a reader waiting for EOF would wait as long), sockets or locks.
        _ = Self.addCloseFrom?(&actions, 3)
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        if let output {
            posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o600)
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        } else {
            for fd: Int32 in 1...2 { posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0) }
        }
        var cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var env: [UnsafeMutablePointer<CChar>?] = []
        var p = environ
        while let entry = p.pointee {
            env.append(strdup(entry))
            p += 1
        }
        env += environment.map { strdup($0) }
        env.append(nil)
        defer { for e in env { free(e) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, &attributes, &cArgs, &env)
        guard rc == 0 else {
            throw CommandError(code: .launch, command: argv.joined(separator: " "), message: String(cString: strerror(rc)))
        }
        return pid
    }

    /// Stops the process group `pid` leads, and reaps it if it is our child.
    public static func stop(_ pid: Int32) {
        kill(-pid, SIGTERM)
        var status: Int32 = 0
        _ = waitpid(pid, &status, WNOHANG)
    }

    /// Waits up to `timeout` for our child `pid` to exit.
    /// - Returns: its exit code (128 + signal when a signal ended it), or nil if it still runs.
    public static func waitForExit(_ pid: Int32, timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            var status: Int32 = 0
            if waitpid(pid, &status, WNOHANG) == pid {
                let signal = status & 0x7F
                return signal == 0 ? (status >> 8) & 0xFF : 128 + signal
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// Whether a process with this id exists (and is not a zombie we could reap).
    public static func isRunning(_ pid: Int32) -> Bool {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == pid { return false }
        return kill(pid, 0) == 0
    }
}
