import ArgumentParser
import Reconcilers
import YAML

/// Options shared by the commands that act on a desired state.
extension Host {
    /// The node as nodeagent's commands see it: `root`, with nodeagent's state where
    /// agent.yaml's `stateDirectory` puts it (the default without an agent.yaml).
    static func node(root: String, config: String = AgentConfig.defaultPath) -> Host {
        let path = RootedFileSystem(root: root).hostPath(config)
        var state = RootedFileSystem.defaultStateDirectory
        if (try? RootedFileSystem(root: "/").read(path)) != nil {
            do {
                state = try AgentConfig.load(path: path).stateDirectory.value
            } catch {
                Terminal.error("warning: \(path) does not load (\(error.diagnostics.first?.description ?? "invalid")): nodeagent's state is taken to be in \(state)")
            }
        }
        return Host(root: root, stateDirectory: state)
    }
}

extension FileSystem {
    /// Where a node path really is, for the code that must hand a path to another program.
    func hostPathOrSelf(_ path: String) -> String { hostPath(path) }
}

struct StateOptions: ParsableArguments {
    /// Where the daemon keeps the revision it last applied.
    static let lastApplied = ReconcileLoop.appliedFile

    @Option(name: .long, help: ArgumentHelp("The desired-state file (default: the revision the agent last applied, \(StateOptions.lastApplied)).",
                                            valueName: "FILE"))
    var state: String?

    @Option(name: .long, help: ArgumentHelp("Limit the pass to these reconcilers: os, firewall, wireguard, k3s, helm, alerting, argocd, backups.",
                                            valueName: "NAME,..."))
    var only: String?

    @Option(name: .long, help: ArgumentHelp("Directory that stands for / on the node (for tests and dry runs in a copy).", valueName: "DIR"))
    var root: String = "/"

    @Option(name: .long, help: ArgumentHelp("The cluster's kubeconfig, for helm and argocd (default: the one K3s writes, \(PassOptions.defaultKubeconfig) under --root).",
                                            valueName: "FILE"))
    var kubeconfig: String?

    func validate() throws {
        _ = try selection()
        guard root.hasPrefix("/") else { throw ValidationError("--root must be an absolute path") }
    }

    /// The reconcilers `--only` names; nil for all.
    func selection() throws -> Set<ReconcilerName>? {
        guard let only else { return nil }
        let known = ReconcilerName.all.map(\.name.rawValue)
        var out = Set<ReconcilerName>()
        for item in only.split(separator: ",", omittingEmptySubsequences: false) {
            let name = item.trimmingSpaces
            guard known.contains(name) else {
                let guess = Suggestion.closest(to: name, in: known).map { " (did you mean \"\($0)\"?)" } ?? ""
                throw ValidationError("--only: unknown reconciler \"\(name)\"\(guess); known: \(known.joined(separator: ", "))")
            }
            out.insert(ReconcilerName(rawValue: name))
        }
        return out
    }

    /// Loads and validates the desired state, printing its diagnostics on failure.
    func load() throws -> Platform { try Self.load(state: state, root: root) }

    /// The desired-state file this pass reads, as an absolute path.
    func statePath() -> String {
        let path = state ?? Host.node(root: root).files.hostPath(StateOptions.lastApplied)
        return WorkingDirectory.absolute(path)
    }

    /// - Parameters:
    ///   - state: the file; nil for the revision the agent last applied (in its state
    ///     directory, under `root`).
    static func load(state: String?, root: String = "/") throws -> Platform {
        let path = state ?? Host.node(root: root).files.hostPathOrSelf(StateOptions.lastApplied)
        do throws(DiagnosticsError) {
            return try DesiredStateLoader.load(path: path)
        } catch {
            for d in error.diagnostics { Terminal.error(d.description) }
            if state == nil {
                Terminal.error("note: no --state given, so nodeagent read the last applied revision; pass --state FILE to use another file")
            }
            throw ExitCode.failure
        }
    }

    func engine(_ options: PassOptions = PassOptions()) throws -> Engine {
        var options = options
        options.kubeconfig = kubeconfig
        options.log = { Terminal.error($0) }
        return try Engine(BuiltInReconcilers.all(on: Host.node(root: root), options: options))
    }
}

extension Substring {
    var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}

extension StateOptions {
    /// Loads the desired state, runs one plan or apply pass over it and prints the report.
    /// - Returns: the report, for the command to turn into its exit status.
    func pass(apply: Bool, output: OutputFormat, options: PassOptions = PassOptions(), settle: Duration = .zero,
              expected: [ReconcilerName: String]? = nil) async throws -> PassReport {
        let platform = try load()
        let engine = try engine(options)
        let only = try selection()
        let entries = apply
            ? await engine.apply(platform, only: only, settle: settle, expected: expected) { entry in
                Terminal.error("[\(entry.name)] \(PassReport.summary(entry.outcome)) (\(PassReport.seconds(entry.seconds)))")
            }
            : await engine.plan(platform, only: only)
        var report = PassReport(result: entries)
        if !apply {
            let path = statePath()
            report.saved = SavedPlan.Context(statePath: path, stateSHA256: try SavedPlan.digest(path), root: root, kubeconfig: kubeconfig, only: only)
        }
        switch output {
        case .text: print(report.text(title: "\(apply ? "Applied" : "Plan for") \(platform.name)"), terminator: "")
        case .json: print(report.json.jsonText)
        }
        return report
    }
}

struct Plan: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show what apply would change. Safe: it observes, never writes.",
        discussion: "Exit status: 0 nothing to do, 2 changes pending, 1 error (Terraform's -detailed-exitcode convention)."
    )

    @OptionGroup var options: StateOptions

    @Option(name: .shortAndLong, help: "Output format: text or json (the json is a saved plan: `apply --plan FILE` applies exactly it).")
    var output: OutputFormat = .text

    @Option(name: .long, help: ArgumentHelp("Also save the plan (json) to this file, mode 0600, for `nodeagent apply --plan FILE`.", valueName: "FILE"))
    var out: String?

    func run() async throws {
        let report = try await options.pass(apply: false, output: output)
        if let out {
            let path = WorkingDirectory.absolute(out)
            try RootedFileSystem(root: "/").write(path, Array((report.json.jsonText + "\n").utf8), mode: 0o600)
        }
        if report.hasErrors { throw ExitCode.failure }
        if report.pendingChanges > 0 { throw ExitCode(2) }
    }
}

struct Apply: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one full pass: plan, apply, verify each reconciler in dependency order.",
        discussion: "Progress goes to stderr. Exit status 0 only when every selected, declared section converged."
    )

    @OptionGroup var options: StateOptions

    @Option(name: .shortAndLong, help: "Output format: text or json.")
    var output: OutputFormat = .text

    @Option(name: .long, help: ArgumentHelp("Keep a firewall change's revert armed this long, until `nodeagent confirm` runs from a new session.",
                                            valueName: "DURATION"))
    var confirmWithin: String?

    @Option(name: .long, help: ArgumentHelp("Restore the previous firewall if a change is not confirmed by nodeagent's own checks within this time (default 60s).",
                                            valueName: "DURATION"))
    var revertAfter: String = "60s"

    @Option(name: .long, help: ArgumentHelp("Keep checking a reconciler that reports Progressing (an install Job, a rollout) for up to this long before moving on (default 0s: do not wait).",
                                            valueName: "DURATION"))
    var wait: String = "0s"

    @Option(name: .long, help: ArgumentHelp("Apply exactly this saved plan (`nodeagent plan -o json --out FILE`); refused, changing nothing, if the desired state or the node changed since.",
                                            valueName: "FILE"))
    var plan: String?

    func validate() throws {
        _ = try passOptions()
        _ = try settle()
        if plan != nil, options.state != nil || options.only != nil || options.kubeconfig != nil || options.root != "/" {
            throw ValidationError("--plan carries its own --state, --only, --root and --kubeconfig: give none of them with it")
        }
    }

    /// The options a saved plan was made with, and its fingerprints, once it is known to hold
    /// for the desired state; exits 1 (changing nothing) when it does not.
    func savedPlan(_ file: String) async throws -> (StateOptions, [ReconcilerName: String]) {
        let saved = try SavedPlan.load(file)
        let ctx = saved.context
        guard saved.unplanned.isEmpty else {
            Terminal.error("error: the plan has reconcilers that could not plan: \(saved.unplanned.joined(separator: ", ")); it does not say what apply would do for them, so nothing is applied: fix them (or plan with --only) and plan again")
            throw ExitCode.failure
        }
        let now = try SavedPlan.digest(ctx.statePath)
        guard now == ctx.stateSHA256 else {
            Terminal.error("error: the plan is stale: \(ctx.statePath) changed since the plan was made (sha256 \(ctx.stateSHA256.prefix(12)) → \(now.prefix(12))); nothing applied: plan again")
            throw ExitCode.failure
        }
        var options = try StateOptions.parse([])
        options.state = ctx.statePath
        options.root = ctx.root
        options.kubeconfig = ctx.kubeconfig
        options.only = ctx.only.map { $0.map(\.rawValue).sorted().joined(separator: ",") }
        // Every reconciler checked before the first is applied: a stale plan changes nothing.
        let entries = await try options.engine(try passOptions()).plan(try options.load(), only: ctx.only)
        var stale: [String] = []
        for entry in entries {
            guard case .planned(let changes) = entry.outcome else { continue }
            let expected = saved.fingerprints[entry.name] ?? Change.fingerprint([])
            if Change.fingerprint(changes) != expected {
                stale.append("\(entry.name): now \(changes.count) change\(changes.count == 1 ? "" : "s")\(changes.isEmpty ? "" : ": " + changes.map(\.subject).joined(separator: ", "))")
            }
        }
        guard stale.isEmpty else {
            Terminal.error("error: the plan is stale: the node changed since the plan was made; nothing applied: plan again")
            for line in stale { Terminal.error("  \(line)") }
            throw ExitCode.failure
        }
        return (options, saved.fingerprints)
    }

    func settle() throws -> Duration {
        do {
            return .milliseconds(try TimeSpan(parsing: wait).milliseconds)
        } catch {
            throw ValidationError("--wait: \(error.message)")
        }
    }

    func passOptions() throws -> PassOptions {
        do {
            let revert = try TimeSpan(parsing: revertAfter)
            let confirm = try confirmWithin.map { try TimeSpan(parsing: $0) }
            guard min(revert, confirm ?? revert) >= TimeSpan(milliseconds: 1000) else {
                throw ValidationError("--revert-after and --confirm-within must be at least 1s")
            }
            // With --confirm-within, the operator's window is the revert's delay.
            return PassOptions(firewall: .init(revertAfter: confirm ?? revert, confirmWithin: confirm))
        } catch let error as InvalidValue {
            throw ValidationError(error.message)
        }
    }

    func run() async throws {
        var options = self.options
        var expected: [ReconcilerName: String]?
        if let plan { (options, expected) = try await savedPlan(plan) }
        let report = try await options.pass(apply: true, output: output, options: try passOptions(), settle: try settle(), expected: expected)
        if !report.converged {
            Terminal.error("error: not converged: \(report.unconverged.joined(separator: ", "))")
            throw ExitCode.failure
        }
    }
}
