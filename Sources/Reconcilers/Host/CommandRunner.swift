internal import Subprocess
internal import Synchronization
#if canImport(Glibc)
internal import Glibc
#endif
#if canImport(System)
internal import System
#else
internal import SystemPackage
#endif

/// A program to run: an executable and its arguments, never through a shell, so there is no
/// quoting to get wrong.
public struct Command: Sendable, Equatable, CustomStringConvertible {
    /// An absolute path, or a name looked up in `PATH`.
    public var executable: String
    public var arguments: [String]
    /// Variables added to (or, with nil, removed from) the inherited environment. Secrets go
    /// here or to `input`, never into `arguments`, which any user can read from /proc.
    public var environment: [String: String?]
    public var input: [UInt8]?
    public var timeout: Duration
    /// Bytes of stdout and of stderr kept; more is an error, never a silent truncation.
    public var outputLimit: Int
    /// The input holds a secret the program might echo: its output never goes into an error.
    public var holdsSecrets: Bool
    /// The directory the program starts in (a host path); nil: the caller's.
    public var workingDirectory: String?

    public init(_ executable: String, _ arguments: [String] = [], environment: [String: String?] = [:],
                input: [UInt8]? = nil, timeout: Duration = .seconds(60), outputLimit: Int = 4 << 20, holdsSecrets: Bool = false,
                workingDirectory: String? = nil) {
        self.holdsSecrets = holdsSecrets
        self.workingDirectory = workingDirectory
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.input = input
        self.timeout = timeout
        self.outputLimit = outputLimit
    }

    /// The command line for messages, with the user information of any URL removed (a token
    /// in a URL must not reach an error, the log or /status).
    public var description: String { GitURL.redacted(([executable] + arguments).joined(separator: " ")) }
}

public struct CommandResult: Sendable, Equatable {
    /// The exit code, or nil when a signal ended the process.
    public var exitCode: Int32?
    public var signal: Int32?
    public var stdout: String
    public var stderr: String

    public var succeeded: Bool { exitCode == 0 }

    /// How it ended, for an error message: `exit status 2` or `killed by signal 11`.
    public var ending: String {
        exitCode.map { "exit status \($0)" } ?? "killed by signal \(signal ?? 0)"
    }
}

public struct CommandError: Error, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Equatable { case notFound, timedOut, outputLimitExceeded, failed, launch }

    public var code: Code
    public var command: String
    public var message: String

    public init(code: Code, command: String, message: String) {
        self.code = code
        self.command = command
        self.message = message
    }

    public var description: String { GitURL.redacted("\(command): \(message)") }
}

/// Runs programs on the node.
public protocol CommandRunner: Sendable {
    /// Runs to completion. A non-zero exit is a result, not an error.
    /// - Throws: `CommandError` when the program cannot start, exceeds its timeout (it is
    ///   then stopped: SIGTERM to its process group, SIGKILL 500 ms later) or its output limit.
    func run(_ command: Command) async throws(CommandError) -> CommandResult
    /// Starts `argv` in a session of its own that outlives nodeagent (the firewall's revert
    /// timer), with stdin and output on /dev/null and no other inherited descriptor.
    /// - Returns: its process id, which is also its process-group id.
    func spawnDetached(_ argv: [String]) throws(CommandError) -> Int32
    /// Ends a process group `spawnDetached` started (SIGTERM), and reaps it if it is our child.
    func stopDetached(_ pid: Int32)
}

extension CommandRunner {
    public func spawnDetached(_ argv: [String]) throws(CommandError) -> Int32 { try DetachedProcess.spawn(argv) }
    public func stopDetached(_ pid: Int32) { DetachedProcess.stop(pid) }
}

extension CommandRunner {
    /// Runs and requires exit status 0.
    /// - Throws: `CommandError` with code `.failed` naming the status and stderr otherwise.
    @discardableResult
    public func check(_ command: Command) async throws(CommandError) -> CommandResult {
        let result = try await run(command)
        guard result.succeeded else {
            let why = result.ending
            let stderr = command.holdsSecrets ? "(output withheld: the input holds a secret)"
                : result.stderr.split(separator: "\n").suffix(5).joined(separator: "\n")
            throw CommandError(code: .failed, command: command.description, message: "\(why)\(stderr.isEmpty ? "" : ": \(stderr)")")
        }
        return result
    }
}

/// Runs real processes with swift-subprocess, each in its own session so that a timeout stops
/// its children too.
public struct SystemCommandRunner: CommandRunner {
    public init() {}

    public func run(_ command: Command) async throws(CommandError) -> CommandResult {
        enum Outcome: Sendable {
            case done(CommandResult)
            case timedOut
        }
        let timeout = Self.timeoutCap.map { min($0, command.timeout) } ?? command.timeout
        do {
            let outcome = try await withThrowingTaskGroup(of: Outcome.self) { group in
                group.addTask {
                    let r = try await Self.spawn(command)
                    var result = CommandResult(exitCode: nil, signal: nil, stdout: r.standardOutput, stderr: r.standardError)
                    switch r.terminationStatus {
                    case .exited(let code): result.exitCode = code
                    case .signaled(let signal): result.signal = signal
                    }
                    return .done(result)
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return .timedOut
                }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
            switch outcome {
            case .done(let result): return result
            case .timedOut:
                throw CommandError(code: .timedOut, command: command.description, message: "timed out after \(timeout)")
            }
        } catch let error as CommandError {
            throw error
        } catch {
            let text = "\(error)"
            let code: CommandError.Code = text.contains("exceeded") ? .outputLimitExceeded
                : (text.contains("not found") ? .notFound : .launch)
            throw CommandError(code: code, command: command.description, message: text)
        }
    }

    /// Test-only: `NODEAGENT_TEST_COMMAND_TIMEOUT_MS=N` caps every command's timeout, so a test
    /// can make a stand-in `nft` hang without waiting out the real 30 s. Compiled into debug
    /// builds only (what `swift test` runs): a release binary, the one nodes run, ignores it.
    #if DEBUG
    static let timeoutCap: Duration? = getenv("NODEAGENT_TEST_COMMAND_TIMEOUT_MS")
        .flatMap { Int(String(cString: $0)) }.map { .milliseconds($0) }
    #else
    static let timeoutCap: Duration? = nil
    #endif

    private static let resolved = Mutex<[String: String]>([:])

    /// The first executable `name` in PATH (then /usr/sbin and /sbin, where root's tools live).
    public static func resolve(_ name: String) -> String? {
        if let hit = resolved.withLock({ $0[name] }) { return hit }
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/local/bin:/usr/bin:/bin"
        let directories = path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"]
        for directory in directories where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 {
                resolved.withLock { $0[name] = candidate }
                return candidate
            }
        }
        return nil
    }

    /// glibc's memfd_create (2.27+), which Swift's Glibc module does not export (it is behind
    /// _GNU_SOURCE); found once by name in the already loaded libc.
    private static let memfdCreate: (@convention(c) (UnsafePointer<CChar>, UInt32) -> Int32)? =
        dlsym(nil, "memfd_create").map { unsafeBitCast($0, to: (@convention(c) (UnsafePointer<CChar>, UInt32) -> Int32).self) }

    /// An anonymous in-memory file (never on a disk: it may hold a key) holding `bytes`, at offset 0.
    static func memoryFile(_ bytes: [UInt8]) throws(CommandError) -> FileDescriptor {
        let fd = memfdCreate?("nodeagent-input", 1 /* MFD_CLOEXEC */) ?? -1
        guard fd >= 0 else { throw CommandError(code: .launch, command: "memfd_create", message: String(cString: strerror(errno))) }
        var written = 0
        while written < bytes.count {
            let n = bytes[written...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let message = String(cString: strerror(errno))
                close(fd)
                throw CommandError(code: .launch, command: "memfd write", message: message)
            }
            written += n
        }
        lseek(fd, 0, SEEK_SET)
        return FileDescriptor(rawValue: fd)
    }

    private static func spawn(_ command: Command) async throws
        -> ExecutionResult<Void, StringOutput<Unicode.UTF8>, StringOutput<Unicode.UTF8>> {
        var options = PlatformOptions()
        options.createSession = true
        options.teardownSequence = [.gracefulShutDown(toProcessGroup: true, allowedDurationToNextStep: .milliseconds(500))]
        // swift-subprocess searches PATH by trying to spawn each candidate in turn, a fork per
        // entry (it showed as 60 ms for `nft` behind six PATH entries); look it up once instead.
        let path = command.executable.hasPrefix("/") ? command.executable : Self.resolve(command.executable)
        let executable: Executable = path.map { .path(FilePath($0)) } ?? .name(command.executable)
        var updates: [Environment.Key: String?] = [:]
        for (k, v) in command.environment {
            guard let key = Environment.Key(rawValue: k) else { continue }
            updates[key] = v
        }
        // The input comes from an in-memory file, not a pipe: a child that exits without reading
        // it (a failing nft) would make swift-subprocess's pipe writer trap on EPIPE.
        let input = try Self.memoryFile(command.input ?? [])
        return try await Subprocess.run(executable, arguments: Arguments(command.arguments),
                                        environment: .inherit.updating(updates),
                                        workingDirectory: command.workingDirectory.map { FilePath($0) }, platformOptions: options,
                                        input: .fileDescriptor(input, closeAfterSpawningProcess: true),
                                        output: .string(limit: command.outputLimit), error: .string(limit: command.outputLimit))
    }
}
