public import KubeClient
import Synchronization
import YAML

/// The way to the node's Kubernetes API: the kubeconfig K3s writes, read when a reconciler
/// first needs it in a pass (K3s may have written it moments before), and one client kept
/// for as long as the file does not change, so connections are reused across passes.
public final class ClusterAccess: Sendable {
    public let kubeconfigPath: String
    let files: any FileSystem
    let retry: RetryPolicy
    let timeout: Duration
    private let cached: Mutex<(bytes: [UInt8], api: KubeAPI)?> = Mutex(nil)

    /// Where the API server's warnings go (the pass's log).
    let log: @Sendable (String) -> Void

    public init(kubeconfigPath: String = "/etc/rancher/k3s/k3s.yaml", files: any FileSystem,
                retry: RetryPolicy = RetryPolicy(attempts: 3), timeout: Duration = .seconds(30), log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.log = log
        self.kubeconfigPath = kubeconfigPath
        self.files = files
        self.retry = retry
        self.timeout = timeout
    }

    /// The client for the kubeconfig as it is now.
    /// - Throws: `ReconcileError` (waiting) while the file is missing; (failed) when it is invalid.
    public func api() throws -> KubeAPI {
        let bytes: [UInt8]?
        do {
            bytes = try files.read(kubeconfigPath)
        } catch {
            throw ReconcileError(.failed, reason: "KubeconfigUnreadable", "cannot read \(kubeconfigPath): \(error)")
        }
        guard let bytes else {
            throw ReconcileError(.waiting, reason: "NoKubeconfig",
                                 "\(kubeconfigPath) does not exist yet: K3s writes it when it starts (pass --kubeconfig to use another)")
        }
        if let hit = cached.withLock({ $0?.bytes == bytes ? $0?.api : nil }) { return hit }
        let config: Kubeconfig
        do throws(DiagnosticsError) {
            config = try Kubeconfig.parse(bytes, file: kubeconfigPath)
        } catch {
            throw ReconcileError(.failed, reason: "KubeconfigInvalid", error.diagnostics.map(\.description).joined(separator: "; "))
        }
        let api = KubeAPI(config: config, retry: retry, timeout: timeout, warnings: log)
        cached.withLock { $0 = (bytes, api) }
        return api
    }
}

extension ReconcileError {
    /// A request to the API server that failed: the server being away is worth waiting for,
    /// anything it refused is not.
    static func kube(_ error: any Error, doing what: String) -> ReconcileError {
        if let error = error as? ReconcileError { return error }
        if let status = error as? KubeStatusError {
            // fieldValidation=Strict: the server's schema lacks a field nodeagent sent. Name it,
            // and what to do, rather than let it be dropped.
            if status.message.contains("field not declared in schema") || (status.code == 400 && status.message.contains("unknown field")) {
                return ReconcileError(.stalled, reason: "FieldNotServed",
                                      "\(what): the API server does not know a field nodeagent sent (\(status.message)); the CRD it serves is older "
                                      + "than the desired state needs: upgrade K3s (spec.k3s.version) or remove the field from platform.yaml")
            }
            let waiting = status.code == 429 || status.code >= 500
            return ReconcileError(waiting ? .waiting : .failed, reason: status.reason.isEmpty ? "APIError" : status.reason,
                                  "\(what): \(status)")
        }
        return ReconcileError(.waiting, reason: "APIUnreachable", "\(what): \(error)")
    }
}

extension KubeAPI {
    /// Whether the CRD (`applications.argoproj.io`) exists with condition `Established=True`:
    /// only then does the API serve its kind.
    func isEstablished(crd name: String) async throws -> Bool {
        let crd = try await getIfPresent(ResourceRef(group: "apiextensions.k8s.io", version: "v1", plural: "customresourcedefinitions", name: name))
        return crd?["status"]?["conditions"]?.array?.contains { $0["type"]?.string == "Established" && $0["status"]?.string == "True" } ?? false
    }
}
