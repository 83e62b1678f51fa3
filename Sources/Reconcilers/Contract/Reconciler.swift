/// The name of a reconciler, as `--only` takes it and `/status` reports it.
public struct ReconcilerName: RawRepresentable, Sendable, Hashable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let os = ReconcilerName(rawValue: "os")
    public static let firewall = ReconcilerName(rawValue: "firewall")
    public static let wireguard = ReconcilerName(rawValue: "wireguard")
    public static let k3s = ReconcilerName(rawValue: "k3s")
    public static let helm = ReconcilerName(rawValue: "helm")
    public static let alerting = ReconcilerName(rawValue: "alerting")
    public static let argocd = ReconcilerName(rawValue: "argocd")
    public static let backups = ReconcilerName(rawValue: "backups")

    /// Every reconciler of the product, with the `spec` section each manages, as registered in
    /// `Sections.all`.
    public static var all: [(name: ReconcilerName, section: String)] {
        Sections.all.compactMap { s in s.reconciler.map { ($0, s.key) } }
    }
}

/// A resource a reconciler owns; no two reconcilers may own the same one.
public enum OwnedResource: Sendable, Hashable, CustomStringConvertible {
    case file(String)
    case nftablesTable(String)
    case networkInterface(String)
    case systemdUnit(String)
    case kubernetesObject(String)

    public var description: String {
        switch self {
        case .file(let p): return "file \(p)"
        case .nftablesTable(let t): return "nftables table \(t)"
        case .networkInterface(let i): return "interface \(i)"
        case .systemdUnit(let u): return "unit \(u)"
        case .kubernetesObject(let o): return "object \(o)"
        }
    }
}

/// One reconciler's verdict after a pass, after the Kubernetes condition convention.
public struct Condition: Sendable, Equatable {
    public enum Status: String, Sendable, Equatable {
        /// Converged and verified.
        case ready = "Ready"
        /// Changes are under way or it waits on something that will come (a Job, a CRD).
        case progressing = "Progressing"
        /// It failed; trying again later may help (an API error, a download that broke).
        case failed = "Failed"
        /// Needs a human or a new desired state: retrying the same thing cannot help (a user
        /// that does not exist, an interface that is not there, a secret file that is missing).
        case stalled = "Stalled"
    }

    public var status: Status
    /// One CamelCase word a machine can match: `Converged`, `PortInUse`, `ChecksumMismatch`.
    public var reason: String
    public var message: String
    /// Structured facts a reader needs as values, not prose (the WireGuard public key).
    public var facts: [String: String] = [:]

    public static let wireguardPublicKey = "wireguardPublicKey"

    public init(_ status: Status, reason: String, message: String = "") {
        self.status = status
        self.reason = reason
        self.message = message
    }

    public static func ready(_ message: String = "") -> Condition { Condition(.ready, reason: "Converged", message: message) }
}

/// A failure that says whether waiting helps (`waiting`: retry later, not an alarm) or a human
/// must act (`stalled`).
public struct ReconcileError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable { case waiting, stalled, failed }

    public var kind: Kind
    public var reason: String
    public var message: String

    public init(_ kind: Kind, reason: String, _ message: String) {
        self.kind = kind
        self.reason = reason
        self.message = message
    }

    public var description: String { message }
}

/// Brings one concern of the node to its desired state: observe → plan → apply → verify.
///
/// `plan` is a pure function of the desired and the observed state: it has no side effects,
/// so `nodeagent plan` is always safe. An empty plan means converged: `apply` is then skipped.
/// Otherwise `apply` does exactly what the plan says. Reads and writes go through the host
/// seams (`CommandRunner`, `FileSystem`), so tests run the real code in a temp root.
public protocol Reconciler: Sendable {
    associatedtype Desired: Sendable & Equatable
    associatedtype Observed: Sendable

    static var name: ReconcilerName { get }
    /// Reconcilers that must be ready before this one runs; a failed one blocks this one.
    static var dependencies: [ReconcilerName] { get }
    /// Whether this one runs while a dependency is still Progressing (it checks for itself
    /// what it needs, such as one Helm release of several); a Failed dependency still blocks.
    static var proceedsWhileDependenciesProgress: Bool { get }
    /// What this reconciler alone writes.
    var owns: [OwnedResource] { get }

    /// The part of the desired state this reconciler manages; nil when its section is absent.
    func desired(from platform: Platform) -> Desired?
    func observe(_ desired: Desired) async throws -> Observed
    func plan(_ desired: Desired, _ observed: Observed) throws -> [Change]
    func apply(_ changes: [Change], desired: Desired) async throws
    func verify(_ desired: Desired) async throws -> Condition
    /// The condition when the plan is empty: nothing to apply, and the observation just made
    /// is the proof, so nothing is observed again. Ready unless the reconciler knows better.
    func converged(_ desired: Desired, _ observed: Observed) -> Condition
}

extension Reconciler {
    public static var proceedsWhileDependenciesProgress: Bool { false }

    public func converged(_ desired: Desired, _ observed: Observed) -> Condition { .ready() }
}
