/// The one result of a plan or apply pass: every reconciler's outcome in dependency order, and
/// the verdicts every reader takes from it — the CLI's exit status, `/status`, `/metrics` and
/// the daemon's backoff and applied revision — instead of one rule per reader.
public struct PassResult: Sendable, Equatable, RandomAccessCollection {
    public var entries: [Engine.Entry]

    public init(_ entries: [Engine.Entry]) { self.entries = entries }

    public var startIndex: Int { entries.startIndex }
    public var endIndex: Int { entries.endIndex }
    public subscript(i: Int) -> Engine.Entry { entries[i] }

    /// What one reconciler's outcome means, and for the whole pass, the worst of them.
    /// Ordered from best to worst.
    public enum Verdict: String, Sendable, Comparable, CaseIterable {
        /// Where the desired state wants it: not declared, nothing to plan, or applied and Ready.
        case converged = "Converged"
        /// Planned, not applied (a plan pass).
        case pending = "Pending"
        /// Done as asked and waiting on a person by design: a firewall change applied with
        /// `--confirm-within`, until `nodeagent confirm`.
        case awaitingOperator = "AwaitingOperator"
        /// Under way, or waiting on something that will come (a Job, a CRD, a dependency).
        case progressing = "Progressing"
        /// Not run: a reconciler it depends on failed (that one carries the reason).
        case blocked = "Blocked"
        /// Failed; a later try may work (the daemon retries with backoff).
        case failed = "Failed"
        /// Declared, but this build has no reconciler for the section: a newer nodeagent is needed.
        case notHandled = "NotHandled"
        /// Needs a human or a new desired state: the same try cannot work.
        case stalled = "Stalled"

        public static func < (a: Verdict, b: Verdict) -> Bool {
            allCases.firstIndex(of: a)! < allCases.firstIndex(of: b)!
        }

        /// Whether a person must act before this can converge.
        public var needsHuman: Bool { self == .stalled || self == .notHandled }
    }

    /// The worst verdict of the pass (`converged` for an empty pass).
    public var verdict: Verdict { entries.map(\.outcome.verdict).max() ?? .converged }

    /// Every selected, declared section converged. A change awaiting its confirmation is not
    /// converged yet; neither is a resting reconciler.
    public var converged: Bool { verdict == .converged }

    /// Applied as asked: converged, or only waiting for the operator's confirmation (what
    /// `apply --confirm-within` promises).
    public var doneAsAsked: Bool {
        entries.allSatisfy { [.converged, .pending, .awaitingOperator].contains($0.outcome.verdict) }
    }

    public func names(_ verdict: Verdict) -> [ReconcilerName] { entries.filter { $0.outcome.verdict == verdict }.map(\.name) }

    /// The changes a plan pass found, over all reconcilers.
    public var pendingChanges: Int {
        entries.reduce(0) { n, e in
            if case .planned(let changes) = e.outcome { return n + changes.count }
            return n
        }
    }

    /// A reconciler could not finish its pass: it threw, even to say it waits (a plan's exit 1).
    public var hasErrors: Bool {
        entries.contains { if case .failed = $0.outcome { return true } else { return false } }
    }
}

extension Engine.Outcome {
    /// The one rule from an outcome to its verdict.
    public var verdict: PassResult.Verdict {
        switch self {
        case .notDeclared: return .converged
        case .notHandled: return .notHandled
        case .blocked: return .blocked
        case .planned(let changes): return changes.isEmpty ? .converged : .pending
        case .applied(_, let c):
            if c.reason == "AwaitingConfirmation", c.status == .progressing { return .awaitingOperator }
            return Self.verdict(c)
        case .failed(let c), .resting(let c): return Self.verdict(c)
        }
    }

    private static func verdict(_ c: Condition) -> PassResult.Verdict {
        switch c.status {
        case .ready: return .converged
        case .progressing: return .progressing
        case .failed: return .failed
        case .stalled: return .stalled
        }
    }

    /// It ran and failed, so the daemon's backoff counts it: `failed` retries soon and
    /// doubles, `stalled` waits the longest (a person must act first).
    public var ranAndFailed: Bool {
        switch self {
        case .failed(let c), .applied(_, let c): return c.status == .failed || c.status == .stalled
        default: return false
        }
    }
}
