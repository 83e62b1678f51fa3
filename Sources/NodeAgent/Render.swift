import ArgumentParser
import Reconcilers
import YAML

struct Render: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every Kubernetes object the cluster reconcilers would apply, as YAML documents.",
        discussion: """
        Offline: no cluster, no secret files needed. Secret values are never printed, neither plain nor \
        base64: each shows the file on the node it comes from, so the output is safe to paste into a review.
        """
    )

    @Option(name: .long, help: ArgumentHelp("The desired-state file (default: the revision the agent last applied, \(StateOptions.lastApplied)).",
                                            valueName: "FILE"))
    var state: String?

    @Option(name: .long, help: ArgumentHelp("Only the objects of these reconcilers: helm, alerting, argocd.", valueName: "NAME,..."))
    var only: String?

    func validate() throws {
        for name in selection() ?? [] where !["helm", "alerting", "argocd"].contains(name) {
            throw ValidationError("--only: \"\(name)\" applies no Kubernetes objects; choose from helm, alerting, argocd")
        }
    }

    func selection() -> Set<String>? {
        only.map { Set($0.split(separator: ",").map { $0.trimmingSpaces }) }
    }

    func run() async throws {
        let platform = try StateOptions.load(state: state)
        var objects: [KubeObject] = []
        let wanted = selection()
        if wanted?.contains("helm") ?? true { objects += try ClusterRender.helm(platform.effectiveHelmReleases ?? [], secrets: .redacted) }
        if wanted?.contains("alerting") ?? true { objects += try ClusterRender.alerting(platform, secrets: .redacted) }
        if wanted?.contains("argocd") ?? true { objects += try ClusterRender.argocd(platform.spec.argocd, secrets: .redacted) }
        var out = "# nodeagent render: the Kubernetes objects for \(platform.name) (\(objects.count) object\(objects.count == 1 ? "" : "s"))\n"
        out += "# Secret values are not shown: each names the file on the node it is read from.\n"
        for object in objects {
            out += "---\n# \(object.subject)\n" + object.body.yamlText
        }
        print(out, terminator: "")
    }
}
