#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Hummingbird
import Logging
import Reconcilers
import ServiceLifecycle
import UnixSignals
import YAML

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The daemon: converge the node from its source, and answer on the status address until SIGTERM.",
        discussion: "Reads the agent config (or a local --state file), runs a pass at start, then on the poll and drift timers, POST /sync and SIGHUP."
    )

    @Option(name: .long, help: ArgumentHelp("The agent config.", valueName: "FILE"))
    var config = AgentConfig.defaultPath

    @Option(name: .long, help: ArgumentHelp("Converge this local file instead of a Git source (laptops, tests).", valueName: "FILE"))
    var state: String?

    @Option(name: .long, help: ArgumentHelp("Directory that stands for / on the node.", valueName: "DIR"))
    var root = "/"

    @Option(name: .long, help: ArgumentHelp("Bind the status server here instead of spec.status.listen.", valueName: "HOST:PORT"))
    var listen: String?

    @Option(name: .long, help: ArgumentHelp("Poll interval with --state (default 60s).", valueName: "DURATION"))
    var poll = "60s"

    @Option(name: .long, help: ArgumentHelp("Restore the previous firewall if a change is not confirmed by the agent's own checks within this time.",
                                            valueName: "DURATION"))
    var revertAfter = "60s"

    @Flag(name: .long, help: "With --state: recover a node without state from spec.backups.offsite before the first pass (agent.yaml's recover: offsite).")
    var recoverOffsite = false

    func run() async throws {
        // SIGHUP asks for a pass; until the loop listens for it (after the first pass), it must
        // not end the process, which is SIGHUP's default.
        signal(SIGHUP, SIG_IGN)
        var logger = Logger(label: "nodeagent")
        logger.logLevel = .info
        let source: ReconcileLoop.Source
        var pollInterval = try TimeSpan(parsing: poll), drift = TimeSpan(milliseconds: 300_000)
        var kubeconfig: String?
        var recover = recoverOffsite
        let host: Host
        if let state {
            host = Host.node(root: root)
            source = .file(state)
        } else {
            let agent = try AgentConfig.loadForCommand(path: config)
            // All of nodeagent's state, the mirror included, under agent.yaml's stateDirectory.
            host = Host(root: root, stateDirectory: agent.stateDirectory.value)
            Self.moveState(root: root, to: agent.stateDirectory.value, logger: logger)
            let mirror = host.files.hostPathOrSelf(ReconcileLoop.mirrorDirectory)
            source = .git(GitSource(config: agent.source, mirror: mirror, commands: host.commands, files: host.files))
            // Written 0644 by earlier user-data: it may name credential files, so root's only.
            let configPath = host.files.hostPath(config)
            var st = stat()
            if stat(configPath, &st) == 0, st.st_mode & 0o077 != 0, chmod(configPath, 0o600) == 0 {
                logger.notice("\(config) was readable by others: made 0600")
            }
            (pollInterval, drift) = (agent.poll, agent.drift)
            if agent.kubeconfig.value != PassOptions.defaultKubeconfig { kubeconfig = agent.kubeconfig.value }
            recover = recover || agent.recover == .offsite
        }
        let status = AgentStatus(clock: host.clock)
        if let commit = try? host.files.read(ReconcileLoop.appliedCommitFile),
           let bytes = try? host.files.read(ReconcileLoop.appliedFile), let last = try? DesiredStateLoader.load(bytes, file: ReconcileLoop.appliedFile) {
            await status.applied(commit: String(decoding: commit, as: UTF8.self).split(separator: "\n").first.map(String.init) ?? "", name: last.name.value)
        }
        let metrics = AgentMetrics()
        let revert = try TimeSpan(parsing: revertAfter)
        let progressLogger = logger
        let options = PassOptions(firewall: .init(revertAfter: max(revert, TimeSpan(milliseconds: 1000))), kubeconfig: kubeconfig,
                                  log: { progressLogger.info("\($0)") })
        let loop = ReconcileLoop(source: source, engine: try Engine(BuiltInReconcilers.all(on: host, options: options)), host: host, status: status,
                                 metrics: metrics, poll: pollInterval, drift: drift, logger: logger, recoverFromOffsite: recover)
        // The status server binds after the first pass: the WireGuard address it binds to is
        // created by that pass. Listed first, it also stops last.
        let serverLogger = logger
        let connectionGuard = ConnectionGuard()
        Self.raiseDescriptorLimit()
        let server = DeferredServer(loop: loop) {
            let address = loop.listenAddress(override: listen)
            serverLogger.info("serving", metadata: ["address": "\(address.host):\(address.port)"])
            let router = StatusServer.router(status: status, metrics: metrics, loop: loop,
                                             host: HostHeaderMiddleware(listen: address.host, port: address.port))
            return Application(router: router, server: .http1(configuration: connectionGuard.http1),
                               configuration: .init(address: .hostname(address.host, port: address.port), serverName: "nodeagent"),
                               logger: serverLogger)
        }
        let scheduler = BackupScheduler(loop: loop, host: host, options: options, metrics: metrics, logger: logger)
        let heartbeat = Heartbeat(loop: loop, host: host, status: status, metrics: metrics, logger: logger)
        loop.onPassFinished { heartbeat.passFinished() }
        let group = ServiceGroup(configuration: .init(services: [server, loop, scheduler, heartbeat], gracefulShutdownSignals: [.sigterm, .sigint],
                                                      logger: logger))
        try await group.run()
    }
}

extension Run {
    /// A node whose agent.yaml names another `stateDirectory` than the default (an earlier
    /// nodeagent kept all but the Git mirror in the default): what the default holds and the
    /// new one lacks is moved over at start, so a pending firewall change, a rolled-back K3s
    /// version or the backup state are not forgotten. A move across file systems is not
    /// attempted: the log says what to move by hand.
    static func moveState(root: String, to directory: String, logger: Logger) {
        let old = RootedFileSystem(root: root)
        let new = RootedFileSystem(root: root, stateDirectory: directory)
        let from = old.hostPath(RootedFileSystem.defaultStateDirectory), to = new.hostPath(RootedFileSystem.defaultStateDirectory)
        guard from != to, let entries = try? old.list(RootedFileSystem.defaultStateDirectory) ?? nil else { return }
        try? new.makeDirectory(RootedFileSystem.defaultStateDirectory, mode: 0o700)
        for entry in entries where (try? new.list(RootedFileSystem.defaultStateDirectory))??.contains(entry) != true {
            if rename("\(from)/\(entry)", "\(to)/\(entry)") == 0 {
                logger.notice("moved \(from)/\(entry) to the stateDirectory \(to)")
            } else {
                logger.error("cannot move \(from)/\(entry) to the stateDirectory \(to) (\(String(cString: strerror(errno)))): move it by hand")
            }
        }
    }

    /// The soft limit of open files up to the hard one (the unit sets `LimitNOFILE=`; a daemon
    /// started otherwise still gets what the system allows), so clients at their cap never
    /// take the descriptors the reconcile loop needs.
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }
}

/// Runs the status server once the loop's first pass is over, or not at all if the agent is
/// asked to stop before that.
struct DeferredServer: Service {
    let loop: ReconcileLoop
    let make: @Sendable () -> any Service

    func run() async throws {
        var passed = false
        for await _ in loop.firstPassDone.cancelOnGracefulShutdown() { passed = true }
        guard passed, !Task.isShuttingDownGracefully else {
            // Stopping before the server ever ran: wait for the shutdown to finish our peers.
            try? await gracefulShutdown()
            return
        }
        try await make().run()
    }
}
