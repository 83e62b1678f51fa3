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

/// Settings of a pass that come from the command line rather than the desired state.
public struct PassOptions: Sendable {
    public var firewall: FirewallReconciler.Options

    public init(firewall: FirewallReconciler.Options = .init()) {
        self.firewall = firewall
    }
}

/// The reconcilers this build ships, for `plan`, `apply` and the daemon. Sections without one
/// here (k3s, helm, alerting, argocd, backups) are reported as not handled.
public enum BuiltInReconcilers {
    public static func all(on host: Host, options: PassOptions = PassOptions()) -> [AnyReconciler] {
        [
            AnyReconciler(OSReconciler(host: host)),
            AnyReconciler(FirewallReconciler(host: host, options: options.firewall)),
            AnyReconciler(WireGuardReconciler(host: host)),
        ]
    }
}
