/// The identity nodeagent uses towards the API server: the field manager of its server-side
/// applies, and the label that marks the objects it manages (so pruning touches only those).
public enum KubeClientIdentity {
    /// The server-side apply field manager of every object nodeagent writes.
    public static let fieldManager = "nodeagent"
    /// The label every object nodeagent manages carries, for pruning only its own objects.
    public static let managedByLabel = (key: "app.kubernetes.io/managed-by", value: "nodeagent")
}
