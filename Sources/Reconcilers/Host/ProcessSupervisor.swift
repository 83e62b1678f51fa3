#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A `ServiceManager` that runs units itself, for a node copy under a root directory where
/// there is no systemd: it reads the unit file nodeagent wrote
/// (`ROOT/etc/systemd/system/NAME`), starts its `ExecStart=` command (the program resolved
/// under the root) as a detached process group, and keeps its pid in
/// `ROOT/run/nodeagent-supervisor/NAME.pid`; its output goes to `NAME.log` beside it.
///
/// Tests drive the K3s reconciler's start, restart and rollback through it with real
/// processes; on a node, `SystemdServiceManager` does the same through systemd.
public struct ProcessSupervisor: ServiceManager {
    public let files: RootedFileSystem
    static let unitDirectory = "/etc/systemd/system"
    static let runDirectory = "/run/nodeagent-supervisor"

    public init(root: String) {
        files = RootedFileSystem(root: root)
    }

    public func isEnabled(_ unit: String) async throws -> Bool {
        try files.read("\(Self.unitDirectory)/multi-user.target.wants/\(unit)") != nil
    }

    public func enable(_ unit: String) async throws {
        try files.write("\(Self.unitDirectory)/multi-user.target.wants/\(unit)", Array("\(Self.unitDirectory)/\(unit)\n".utf8), mode: 0o644)
    }

    public func disable(_ unit: String) async throws {
        try files.remove("\(Self.unitDirectory)/multi-user.target.wants/\(unit)")
    }

    public func isActive(_ unit: String) async throws -> Bool {
        guard let pid = try pid(unit) else { return false }
        return DetachedProcess.isRunning(pid)
    }

    public func start(_ unit: String) async throws {
        if try await isActive(unit) { return }
        guard let text = try files.read("\(Self.unitDirectory)/\(unit)").map({ String(decoding: $0, as: UTF8.self) }) else {
            throw ServiceError(description: "unit \(unit) does not exist")
        }
        guard let line = text.split(separator: "\n").last(where: { $0.hasPrefix("ExecStart=") }) else {
            throw ServiceError(description: "unit \(unit) has no ExecStart=")
        }
        var argv = line.dropFirst("ExecStart=".count).split(separator: " ").map(String.init)
        guard !argv.isEmpty, argv[0].hasPrefix("/") else { throw ServiceError(description: "unit \(unit): ExecStart= needs an absolute program") }
        argv[0] = files.hostPath(argv[0])
        try files.makeDirectory(Self.runDirectory, mode: 0o755)
        let pid = try DetachedProcess.spawn(argv, output: files.hostPath("\(Self.runDirectory)/\(unit).log"))
        try files.write("\(Self.runDirectory)/\(unit).pid", Array("\(pid)\n".utf8), mode: 0o644)
    }

    public func stop(_ unit: String) async throws {
        guard let pid = try pid(unit) else { return }
        DetachedProcess.stop(pid)
        if await DetachedProcess.waitForExit(pid, timeout: .seconds(10)) == nil, DetachedProcess.isRunning(pid) {
            kill(-pid, SIGKILL)
            _ = await DetachedProcess.waitForExit(pid, timeout: .seconds(5))
        }
        try files.remove("\(Self.runDirectory)/\(unit).pid")
    }

    public func restart(_ unit: String) async throws {
        try await stop(unit)
        try await start(unit)
    }

    public func reload(_ unit: String) async throws { try await restart(unit) }

    public func reloadDaemon() async throws {}

    public func reloadIfRunning(_ unit: String) async throws {
        if try await isActive(unit) { try await restart(unit) }
    }

    func pid(_ unit: String) throws -> Int32? {
        guard let bytes = try files.read("\(Self.runDirectory)/\(unit).pid") else { return nil }
        return Int32(String(decoding: bytes, as: UTF8.self).split(separator: "\n").first ?? "")
    }
}
