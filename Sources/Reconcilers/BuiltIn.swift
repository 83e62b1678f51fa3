/// What a reconciler needs from the node: the seams every side effect goes through.
public struct Host: Sendable {
    public var files: any FileSystem
    public var commands: any CommandRunner
    public var services: any ServiceManager
    public var clock: any WallClock

    /// The real node, or a copy of it under `root` (files and unit enablement only).
    public init(root: String = "/") {
        let commands = SystemCommandRunner()
        self.init(files: RootedFileSystem(root: root), commands: commands,
                  services: SystemdServiceManager(commands: commands, root: root), clock: SystemWallClock())
    }

    public init(files: any FileSystem, commands: any CommandRunner, services: any ServiceManager, clock: any WallClock) {
        self.files = files
        self.commands = commands
        self.services = services
        self.clock = clock
    }
}

/// The reconcilers this build ships, for `plan`, `apply` and the daemon.
public enum BuiltInReconcilers {
    /// None yet: the OS, firewall and WireGuard reconcilers, K3s, Helm, alerting, Argo CD and
    /// backups each arrive with their own change. Until then the engine reports their declared
    /// sections as not handled instead of pretending they converged.
    public static func all(on host: Host) -> [AnyReconciler] {
        []
    }
}
