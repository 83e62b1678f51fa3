/// Which helm-controller each K3s release bundles, and so which HelmChart fields its API
/// server serves.
///
/// Source: k3s-io/docs, `docs/release-notes/v1.NN.X.md`, the "Embedded Component Versions"
/// table of each release (and the k3s-io/k3s GitHub release pages for v1.34.9, v1.35.5,
/// v1.35.6). helm-controller added `spec.valuesSecrets` in v0.16.7 (k3s-io/helm-controller,
/// tag v0.16.7, 2025-03-20, commits "Add ValuesSecrets to HelmChart/HelmChartConfig").
/// Releases the table does not list are unknown: nodeagent then checks the CRD the node serves.
public enum BundledHelmController {
    /// (minor, first patch, last patch, helm-controller) — runs of releases with one version.
    static let table: [(minor: Int, from: Int, to: Int, helmController: String)] = [
        (31, 0, 0, "v0.16.3"), (31, 1, 1, "v0.16.4"), (31, 2, 5, "v0.16.5"), (31, 6, 7, "v0.16.6"), (31, 8, 9, "v0.16.10"),
        (31, 10, 10, "v0.16.11"), (31, 14, 14, "v0.16.16"),
        (32, 0, 1, "v0.16.5"), (32, 2, 3, "v0.16.6"), (32, 4, 5, "v0.16.10"), (32, 6, 6, "v0.16.11"), (32, 7, 9, "v0.16.13"),
        (32, 10, 10, "v0.16.16"), (32, 11, 11, "v0.16.17"),
        (33, 0, 1, "v0.16.10"), (33, 2, 2, "v0.16.11"), (33, 3, 4, "v0.16.13"),
        (34, 1, 1, "v0.16.13"), (34, 2, 2, "v0.16.16"), (34, 9, 9, "v0.17.1"),
        (35, 0, 0, "v0.16.17"), (35, 5, 6, "v0.17.1"),
        (36, 0, 2, "v0.17.1"),
    ]

    /// The first release of each minor line whose helm-controller serves `valuesSecrets`; from
    /// 1.33 on, every release does.
    static let firstWithValuesSecrets: [Int: (patch: Int, revision: Int)] = [31: (8, 1), 32: (4, 1)]

    /// The helm-controller `k3s` bundles, or nil when the table does not list that release.
    public static func version(for k3s: K3sVersion) -> String? {
        guard k3s.major == 1 else { return nil }
        return table.first { $0.minor == k3s.minor && ($0.from...$0.to).contains(k3s.patch) }?.helmController
    }

    /// Whether the HelmChart CRD of `k3s` has `spec.valuesSecrets`; nil when unknown.
    public static func servesValuesSecrets(_ k3s: K3sVersion) -> Bool? {
        guard k3s.major == 1 else { return nil }
        if k3s.minor >= 33 { return true }
        guard let first = firstWithValuesSecrets[k3s.minor] else { return nil }
        return k3s.patch >= first.patch
    }

    /// The first release of `k3s`'s minor line with `valuesSecrets`, as `v1.31.8+k3s1`.
    public static func firstReleaseWithValuesSecrets(like k3s: K3sVersion) -> String? {
        if k3s.minor >= 33 { return "v1.\(k3s.minor).0+k3s1" }
        return firstWithValuesSecrets[k3s.minor].map { "v1.\(k3s.minor).\($0.patch)+k3s\($0.revision)" }
    }
}
