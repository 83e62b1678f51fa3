/// What a reconciler needs from the node: the seams every side effect goes through.
public struct Host: Sendable {
    public var files: any FileSystem
    /// The running system's own files, never under `--root`: the kernel's (/proc, /sys) and the
    /// installed programs' (/usr/lib/postgresql). Tests may inject another view.
    public var system: any FileSystem = RootedFileSystem(root: "/")
    public var commands: any CommandRunner
    public var services: any ServiceManager
    public var clock: any WallClock

    /// The real node, or a copy of it under `root` (files and unit enablement only), with
    /// nodeagent's state under `stateDirectory` (a node path; see `RootedFileSystem`).
    public init(root: String = "/", stateDirectory: String = RootedFileSystem.defaultStateDirectory) {
        let commands = SystemCommandRunner()
        self.init(files: RootedFileSystem(root: root, stateDirectory: stateDirectory), commands: commands,
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
    public static let defaultKubeconfig = "/etc/rancher/k3s/k3s.yaml"

    public var firewall: FirewallReconciler.Options
    /// The kubeconfig of the cluster reconcilers, as a path on this machine; nil for the one
    /// K3s writes on the node (under the host's root).
    public var kubeconfig: String?
    /// Progress lines of long steps (a K3s download, a restart), for stderr or the log.
    public var log: @Sendable (String) -> Void

    public init(firewall: FirewallReconciler.Options = .init(), kubeconfig: String? = nil, log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.firewall = firewall
        self.kubeconfig = kubeconfig
        self.log = log
    }

    /// The cluster access for a pass on `host`.
    public func cluster(on host: Host) -> ClusterAccess {
        if let kubeconfig { return ClusterAccess(kubeconfigPath: kubeconfig, files: host.system, log: log) }
        return ClusterAccess(kubeconfigPath: Self.defaultKubeconfig, files: host.files, log: log)
    }
}

/// The reconcilers this build ships, for `plan`, `apply` and the daemon: one for every section.
public enum BuiltInReconcilers {
    public static func all(on host: Host, options: PassOptions = PassOptions()) -> [AnyReconciler] {
        let cluster = options.cluster(on: host)
        return Sections.all.compactMap { $0.make?(host, options, cluster) }
    }
}
