/// The Kubernetes API client over libcurl (through `CCurl`) lands here: kubeconfig loading,
/// get/list/watch/server-side apply/delete and `Status` errors. Until then this module holds
/// only the identity nodeagent uses towards the API server, shared by the reconcilers to come.
public enum KubeClientIdentity {
    /// The server-side apply field manager of every object nodeagent writes.
    public static let fieldManager = "nodeagent"
    /// The label every object nodeagent manages carries, for pruning only its own objects.
    public static let managedByLabel = (key: "app.kubernetes.io/managed-by", value: "nodeagent")
}
