public import KubeClient
import YAML

/// Where the values of secret files come from when objects are rendered: the node's files
/// (for apply), or nowhere (for `nodeagent render`, which shows where each would come from).
public enum SecretSource: Sendable {
    case files(any FileSystem)
    case redacted

    /// A secret file's content without its final newline.
    /// - Throws: `ReconcileError` (failed) when the file is missing, readable by others than
    ///   its owner, or not text.
    func read(_ path: AbsolutePath, for what: String) throws -> String? {
        guard case .files(let files) = self else { return nil }
        do {
            guard let bytes = try files.readSecret(path.value, limit: Self.limit) else {
                throw ReconcileError(.stalled, reason: "SecretFileMissing",
                                     "\(path) (\(what)) does not exist: write the secret there on the node, mode 0600")
            }
            var text = String(decoding: bytes, as: UTF8.self)
            while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            guard !text.isEmpty, Array(text.utf8) == Array(bytes.prefix(text.utf8.count)) else {
                throw ReconcileError(.stalled, reason: "SecretFileInvalid", "\(path) (\(what)) is empty or not UTF-8 text")
            }
            return text
        } catch let error as FileSystemError {
            throw Self.refusal(error, path: path, what: what)
        }
    }

    /// Secret files are keys, passwords and tokens: anything bigger is not one.
    public static let limit = 1 << 20

    /// Why a secret file was not read, as a reconciler failure with a stable reason.
    public static func refusal(_ error: FileSystemError, path: AbsolutePath, what: String) -> ReconcileError {
        switch error.problem {
        case .exposed(let mode)?:
            return ReconcileError(.stalled, reason: "SecretFileExposed",
                                  "\(path) (\(what)) is mode \(String(mode & 0o777, radix: 8)): secrets must be readable by their owner only (chmod 600)")
        case .some:
            return ReconcileError(.stalled, reason: "SecretFileRefused",
                                  "\(error.description) (\(what)): a secret file must be a regular file owned by root, mode 0600, at most \(limit) bytes")
        case nil:
            return ReconcileError(.failed, reason: "SecretFileUnreadable", "\(path) (\(what)): \(error)")
        }
    }

    static func placeholder(_ path: AbsolutePath) -> String { "<redacted: the content of \(path) on the node>" }
}

/// The Kubernetes objects the cluster reconcilers apply, computed from the desired state
/// alone (plus secret files): what `helm` and `argocd` send, and what `nodeagent render` prints.
public enum ClusterRender {
    public static let helmNamespace = "kube-system"

    /// Every object, in the order the reconcilers apply them.
    public static func all(_ platform: Platform, secrets: SecretSource) throws -> [KubeObject] {
        try helm(platform.effectiveHelmReleases ?? [], secrets: secrets) + alerting(platform, secrets: secrets)
            + argocd(platform.spec.argocd, secrets: secrets)
    }

    // MARK: - helm

    public static func helmChartRef(_ name: String? = nil) -> ResourceRef {
        ResourceRef(group: "helm.cattle.io", version: "v1", plural: "helmcharts", namespace: helmNamespace, name: name)
    }

    static func valuesSecretName(_ release: HelmRelease) -> String { valuesSecretName(release.name.value) }
    static func valuesSecretName(_ release: String) -> String { "nodeagent-values-\(release)" }

    /// Per release: the Secret with its file-sourced values (if any), then its `HelmChart`.
    public static func helm(_ releases: [HelmRelease], secrets: SecretSource) throws -> [KubeObject] {
        var out: [KubeObject] = []
        for release in releases {
            if !release.valuesSecrets.isEmpty { out.append(try valuesSecret(release, secrets: secrets)) }
            out.append(helmChart(release))
        }
        return out
    }

    static func helmChart(_ release: HelmRelease) -> KubeObject {
        var spec: [JSONValue.Member] = []
        if let repo = release.repo, repo.scheme == "oci" {
            spec.append(.init("chart", .string(repo.value.hasSuffix("/") ? repo.value + release.chart : repo.value + "/" + release.chart)))
        } else {
            spec.append(.init("chart", .string(release.chart)))
            if let repo = release.repo { spec.append(.init("repo", .string(repo.value))) }
        }
        spec.append(.init("version", .string(release.version)))
        spec.append(.init("targetNamespace", .string(release.namespace.value)))
        // helm-controller's Go struct has `omitempty` on every field: its typed Update, when it
        // claims the chart, drops `createNamespace: false`. Sent, it would read back as drift on
        // every pass; absent means false to helm-controller anyway.
        if release.createNamespace { spec.append(.init("createNamespace", .bool(true))) }
        if release.values.members?.isEmpty == false { spec.append(.init("valuesContent", .string(release.values.yamlText))) }
        if !release.valuesSecrets.isEmpty {
            spec.append(.init("valuesSecrets", .array([.object(["name": .string(valuesSecretName(release)),
                                                                "keys": .array([.string("values.yaml")])])])))
        }
        return KubeObject(ref: helmChartRef(release.name.value), body: .object([
            "apiVersion": .string("helm.cattle.io/v1"), "kind": .string("HelmChart"),
            "metadata": .object(["name": .string(release.name.value), "namespace": .string(helmNamespace),
                                 "labels": KubeObject.labels(owner: .helm)]),
            "spec": .object(spec),
        ]))
    }

    /// The values from files as one YAML document (`values.yaml`), which helm-controller
    /// merges over `valuesContent`.
    static func valuesSecret(_ release: HelmRelease, secrets: SecretSource) throws -> KubeObject {
        var values = JSONValue.object([])
        var redacted = JSONValue.object([])
        for item in release.valuesSecrets {
            let path = item.key.split(separator: ".").map(String.init)
            values[path] = .string(try secrets.read(item.file, for: "helmReleases \(release.name) valuesSecrets \(item.key)") ?? "")
            redacted[path] = .string(SecretSource.placeholder(item.file))
        }
        let object = KubeObject.secret(name: valuesSecretName(release), namespace: helmNamespace, owner: .helm,
                                       data: [("values.yaml", Array(values.jsonText.utf8))])
        guard case .files = secrets else { return KubeObject.redactedSecret(object, sources: [("values.yaml", redacted.yamlText)]) }
        return object
    }

    // MARK: - argocd

    public static func applicationRef(namespace: String, name: String? = nil) -> ResourceRef {
        ResourceRef(group: "argoproj.io", version: "v1alpha1", plural: "applications", namespace: namespace, name: name)
    }

    public static func appProjectRef(namespace: String, name: String? = nil) -> ResourceRef {
        ResourceRef(group: "argoproj.io", version: "v1alpha1", plural: "appprojects", namespace: namespace, name: name)
    }

    static let inCluster = "https://kubernetes.default.svc"

    /// The AppProject confining the root Application and its children, and (unless told not to)
    /// Argo CD's `default` project emptied, so a child Application cannot name it to escape.
    static func appProjects(_ app: ArgoCDSpec.AppOfApps, namespace: String) -> [KubeObject] {
        let p = app.project
        func project(_ name: String, _ spec: [JSONValue.Member]) -> KubeObject {
            KubeObject(ref: appProjectRef(namespace: namespace, name: name), body: .object([
                "apiVersion": .string("argoproj.io/v1alpha1"), "kind": .string("AppProject"),
                "metadata": .object(["name": .string(name), "namespace": .string(namespace), "labels": KubeObject.labels(owner: .argocd)]),
                "spec": .object(spec),
            ]))
        }
        var repos = [app.repoURL.value]
        for repo in p.sourceRepos where !repos.contains(repo.value) { repos.append(repo.value) }
        var spec: [JSONValue.Member] = [
            .init("description", .string("managed by nodeagent: what the App-of-Apps \(app.name) may deploy")),
            .init("sourceRepos", .array(repos.map(JSONValue.string))),
            .init("destinations", .array(p.destinationNamespaces.map {
                .object(["server": .string(inCluster), "namespace": .string($0)])
            })),
            .init("clusterResourceWhitelist", .array(p.clusterResources.map { kind in
                let parts = kind.split(separator: "/").map(String.init)
                return .object(["group": .string(parts.count == 2 ? parts[0] : ""), "kind": .string(parts.last ?? kind)])
            })),
        ]
        if !p.signatureKeys.isEmpty {
            spec.append(.init("signatureKeys", .array(p.signatureKeys.map { .object(["keyID": .string($0)]) })))
        }
        var out = [project(app.name.value, spec)]
        if p.restrictDefaultProject {
            out.append(project("default", [
                .init("description", .string("emptied by nodeagent: use the project of the App-of-Apps")),
                .init("sourceRepos", .array([])), .init("destinations", .array([])), .init("clusterResourceWhitelist", .array([])),
            ]))
        }
        return out
    }

    /// The repository credentials Secret (for a private repository), the AppProjects, then the
    /// root Application.
    public static func argocd(_ spec: ArgoCDSpec?, secrets: SecretSource) throws -> [KubeObject] {
        guard let spec, let app = spec.appOfApps else { return [] }
        var out: [KubeObject] = []
        let namespace = spec.namespace.value
        if app.username != nil || app.passwordFile != nil || app.sshPrivateKeyFile != nil {
            var data: [(key: String, value: [UInt8])] = [("type", Array("git".utf8)), ("url", Array(app.repoURL.value.utf8))]
            var sources: [(key: String, source: String)] = [("type", "git"), ("url", app.repoURL.value)]
            if let user = app.username {
                data.append(("username", Array(user.utf8)))
                sources.append(("username", user))
            }
            for (key, file) in [("password", app.passwordFile), ("sshPrivateKey", app.sshPrivateKeyFile)] {
                guard let file else { continue }
                var value = try secrets.read(file, for: "argocd appOfApps \(key)") ?? ""
                if key == "sshPrivateKey" { value += "\n" }   // a PEM key ends with a newline
                data.append((key, Array(value.utf8)))
                sources.append((key, SecretSource.placeholder(file)))
            }
            let object = KubeObject.secret(name: "nodeagent-repo-\(app.name)", namespace: namespace, owner: .argocd,
                                           labels: [.init("argocd.argoproj.io/secret-type", .string("repository"))], data: data)
            if case .files = secrets { out.append(object) } else { out.append(KubeObject.redactedSecret(object, sources: sources)) }
        }
        out += appProjects(app, namespace: namespace)
        out.append(KubeObject(ref: applicationRef(namespace: namespace, name: app.name.value), body: .object([
            "apiVersion": .string("argoproj.io/v1alpha1"), "kind": .string("Application"),
            "metadata": .object(["name": .string(app.name.value), "namespace": .string(namespace),
                                 "labels": KubeObject.labels(owner: .argocd)]),
            "spec": .object([
                "project": .string(app.name.value),
                "source": .object(["repoURL": .string(app.repoURL.value), "path": .string(app.path),
                                   "targetRevision": .string(app.targetRevision)]),
                "destination": .object(["server": .string(inCluster),
                                        "namespace": .string(app.destinationNamespace.value)]),
                "syncPolicy": .object([
                    "automated": .object(["prune": .bool(true), "selfHeal": .bool(true)]),
                    "syncOptions": .array([.string("CreateNamespace=true")]),
                ]),
            ]),
        ])))
        return out
    }
}
