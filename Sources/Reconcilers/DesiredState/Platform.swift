public import YAML
import Foundation

/// The desired state of one node: the typed form of `platform.yaml`.
///
/// Every `spec` section is optional; an omitted section means nodeagent does not manage it.
public struct Platform: Sendable, Equatable {
    public var name: DNSLabel
    public var spec: Spec

    public struct Spec: Sendable, Equatable {
        public var os: OSSpec?
        public var firewall: FirewallSpec?
        public var wireguard: WireGuardSpec?
        public var k3s: K3sSpec?
        public var helmReleases: [HelmRelease]?
        public var argocd: ArgoCDSpec?
        public var alerting: AlertingSpec?
        public var backups: BackupsSpec?
        /// The sections registered in `Sections.all` with a type of their own, by key (read
        /// them with `section(_:)`).
        public var sections: [String: SectionValue] = [:]

        /// `spec.status`: registered in `Sections.all` as a section of its own type.
        public var status: StatusSpec? { section(StatusSpec.self) }
    }

    public static let apiVersion = "nodeagent/v1"
    public static let kind = "Platform"
}

extension Platform: YAMLDecodable {
    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: ["apiVersion", "kind", "metadata", "spec"])
        let apiVersion = try r.required("apiVersion", as: String.self)
        guard apiVersion == Platform.apiVersion else {
            throw context.fail(.invalidValue, "apiVersion must be \"\(Platform.apiVersion)\", not \"\(apiVersion)\"",
                               at: r.node("apiVersion")!.mark, path: path + "apiVersion")
        }
        let kind = try r.required("kind", as: String.self)
        guard kind == Platform.kind else {
            throw context.fail(.invalidValue, "kind must be \"\(Platform.kind)\" in a desired-state file, not \"\(kind)\"",
                               at: r.node("kind")!.mark, path: path + "kind")
        }
        let metadata = try MappingReader(r.node("metadata") ?? YAMLNode(.mapping([]), mark: node.mark),
                                         path: path + "metadata", context: context, keys: ["name"])
        var failed = false
        let name: DNSLabel? = Self.attempt(&failed) { try metadata.required("name") }
        let spec: Spec? = Self.attempt(&failed) { try r.required("spec") }
        try metadata.finish()
        try r.finish()
        guard !failed, let name, let spec else { throw DecodeFailure() }
        self.name = name
        self.spec = spec
    }

    /// Runs one read, turning its failure (already reported) into a flag, so that sibling
    /// sections are still checked and every error shows in one run.
    static func attempt<T>(_ failed: inout Bool, _ read: () throws -> T?) -> T? {
        do {
            return try read()
        } catch {
            failed = true
            return nil
        }
    }
}

extension Platform.Spec: YAMLDecodable {
    /// The keys `spec` accepts: every registered section's (`Sections.all`).
    public static var sectionNames: [String] { Sections.keys }

    public init(yaml node: YAMLNode, path: FieldPath, context: DecodeContext) throws {
        let r = try MappingReader(node, path: path, context: context, keys: Self.sectionNames)
        var failed = false
        os = Platform.attempt(&failed) { try r.optional("os") }
        firewall = Platform.attempt(&failed) { try r.optional("firewall") }
        wireguard = Platform.attempt(&failed) { try r.optional("wireguard") }
        k3s = Platform.attempt(&failed) { try r.optional("k3s") }
        helmReleases = Platform.attempt(&failed) { try r.optional("helmReleases") }
        argocd = Platform.attempt(&failed) { try r.optional("argocd") }
        alerting = Platform.attempt(&failed) { try r.optional("alerting") }
        backups = Platform.attempt(&failed) { try r.optional("backups") }
        for section in Sections.all {
            guard let decode = section.decode else { continue }
            if let value = Platform.attempt(&failed, { try decode(r) }) { sections[section.key] = value }
        }
        try r.finish()
        if failed { throw DecodeFailure() }
    }
}

enum EnumHelp {
    static func message(_ text: String, _ allowed: [String]) -> String {
        let guess = Suggestion.closest(to: text, in: allowed).map { " (did you mean \"\($0)\"?)" } ?? ""
        return "\"\(text)\" is not one of: \(allowed.joined(separator: ", "))\(guess)"
    }
}

/// A field that takes one of a fixed set of words; a typo gets a "did you mean".
public protocol YAMLEnum: YAMLScalarParsable, RawRepresentable<String>, CaseIterable {}

extension YAMLEnum {
    public init(parsing text: String) throws(InvalidValue) {
        guard let value = Self(rawValue: text) else {
            throw InvalidValue(EnumHelp.message(text, Self.allCases.map(\.rawValue)))
        }
        self = value
    }
}

extension Platform {
    /// The Helm releases as nodeagent installs them: the Argo CD release also gets the
    /// App-of-Apps' `knownHosts` as the argo-cd chart's `configs.ssh.extraHosts` (appended to the
    /// chart's own `knownHosts` in `argocd-ssh-known-hosts-cm`), after any the values set.
    public var effectiveHelmReleases: [HelmRelease]? {
        guard var releases = spec.helmReleases else { return nil }
        guard let argo = spec.argocd, let hosts = argo.appOfApps?.knownHosts, !hosts.isEmpty,
              let i = releases.firstIndex(where: { $0.name == argo.release }) else { return releases }
        let path = ["configs", "ssh", "extraHosts"]
        let earlier = releases[i].values[path]?.string.map { $0.hasSuffix("\n") ? $0 : $0 + "\n" } ?? ""
        releases[i].values[path] = .string(earlier + hosts.joined(separator: "\n") + "\n")
        return releases
    }
}
