public import YAML

/// A `spec` section that lives wholly in its own folder: its type decodes it (a `MappingReader`
/// over its keys, unknown keys refused with a "did you mean") and says its key. Registered in
/// `Sections.all` with its reconciler; read with `platform.spec.section(MySpec.self)`.
public protocol SectionSpec: YAMLDecodable, Sendable, Equatable {
    /// Its key under `spec` in `platform.yaml`.
    static var key: String { get }
    /// The secret files it names, by the key that names them: checked like every secret file
    /// (regular, root's, 0600) and redacted wherever their content could show.
    var secretFiles: [(key: String, file: AbsolutePath)] { get }
}

extension SectionSpec {
    public var secretFiles: [(key: String, file: AbsolutePath)] { [] }
}

/// A registered section's decoded value, kept in `Platform.Spec.sections`.
public struct SectionValue: Sendable, Equatable {
    public let value: any SectionSpec

    public static func == (a: SectionValue, b: SectionValue) -> Bool { a.value.isEqual(to: b.value) }
}

extension SectionSpec {
    func isEqual(to other: any SectionSpec) -> Bool { (other as? Self) == self }
}

extension Platform.Spec {
    /// A section registered in `Sections.all` with its own type; nil when it is absent.
    public func section<S: SectionSpec>(_ type: S.Type) -> S? { sections[S.key]?.value as? S }
}

/// One section of the desired state and the reconciler that converges it.
public struct Section: Sendable {
    /// Its key under `spec`.
    public let key: String
    /// The reconciler that converges it, in `--only` and `/status`; nil for a section the
    /// daemon reads itself (`status`).
    public let reconciler: ReconcilerName?
    let isDeclared: @Sendable (Platform.Spec) -> Bool
    /// Decodes a section with a type of its own; nil for the sections `Platform.Spec` has as fields.
    let decode: (@Sendable (MappingReader) throws -> SectionValue?)?
    let make: (@Sendable (Host, PassOptions, ClusterAccess) -> AnyReconciler)?

    /// A section `Platform.Spec` holds as a typed field of its own.
    static func field(_ key: String, _ reconciler: ReconcilerName?, declared: @escaping @Sendable (Platform.Spec) -> Bool,
                      make: (@Sendable (Host, PassOptions, ClusterAccess) -> AnyReconciler)?) -> Section {
        Section(key: key, reconciler: reconciler, isDeclared: declared, decode: nil, make: make)
    }

    /// A section of its own type that the daemon reads itself (no reconciler: `status`).
    public static func section<S: SectionSpec>(_ spec: S.Type) -> Section {
        Section(key: S.key, reconciler: nil, isDeclared: { $0.sections[S.key] != nil },
                decode: { r in try r.optional(S.key, as: S.self).map { SectionValue(value: $0) } }, make: nil)
    }

    /// A section and its reconciler that live wholly in their folder: one line in `Sections.all`.
    public static func section<S: SectionSpec, R: Reconciler>(_ spec: S.Type, _ reconciler: ReconcilerName,
                                                               make: @escaping @Sendable (Host, PassOptions, ClusterAccess) -> R) -> Section {
        Section(key: S.key, reconciler: reconciler, isDeclared: { $0.sections[S.key] != nil },
                decode: { r in try r.optional(S.key, as: S.self).map { SectionValue(value: $0) } },
                make: { AnyReconciler(make($0, $1, $2)) })
    }
}

/// Every section of the desired state, with its reconciler, in the order the keys are listed
/// and the reconcilers registered (the engine then orders them by their dependencies): the one
/// place a new section is registered. See docs/architecture.md, "How to add a reconciler".
public enum Sections {
    public static let all: [Section] = [
        .field("os", .os, declared: { $0.os != nil }) { host, _, _ in AnyReconciler(OSReconciler(host: host, kernel: host.system)) },
        .field("firewall", .firewall, declared: { $0.firewall != nil }) { host, options, _ in
            AnyReconciler(FirewallReconciler(host: host, options: options.firewall))
        },
        .field("wireguard", .wireguard, declared: { $0.wireguard != nil }) { host, _, _ in AnyReconciler(WireGuardReconciler(host: host)) },
        .field("k3s", .k3s, declared: { $0.k3s != nil }) { host, options, cluster in
            AnyReconciler(K3sReconciler(host: host, cluster: cluster, options: .init(log: options.log)))
        },
        .field("helmReleases", .helm, declared: { $0.helmReleases != nil }) { host, _, cluster in AnyReconciler(HelmReconciler(host: host, cluster: cluster)) },
        .field("alerting", .alerting, declared: { $0.alerting != nil }) { host, _, cluster in AnyReconciler(AlertingReconciler(host: host, cluster: cluster)) },
        .field("argocd", .argocd, declared: { $0.argocd != nil }) { host, _, cluster in AnyReconciler(ArgoCDReconciler(host: host, cluster: cluster)) },
        .field("backups", .backups, declared: { $0.backups != nil }) { host, _, _ in AnyReconciler(BackupsReconciler(host: host)) },
        .section(StatusSpec.self),
        .section(HeartbeatSpec.self, .heartbeat) { host, _, _ in HeartbeatReconciler(host: host) },
    ]

    /// The keys `spec` accepts.
    public static var keys: [String] { all.map(\.key) }
}
