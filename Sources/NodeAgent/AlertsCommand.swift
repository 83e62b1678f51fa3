import ArgumentParser
import KubeClient
import Reconcilers
import YAML

struct AlertsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alerts",
        abstract: "Email alerting: prove it works end to end.",
        subcommands: [AlertsTest.self]
    )
}

struct AlertsTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test",
        abstract: "Send a synthetic, clearly labelled critical alert to Alertmanager and report whether it accepted it.",
        discussion: """
        The alert (NodeagentTestAlert, severity critical, source "nodeagent alerts test") is routed to the email receiver \
        at once and resolves by itself after 5 minutes. Alertmanager is found through the cluster (the kube-prometheus-stack \
        release's Service) unless --alertmanager gives its URL. Exit status 0 when Alertmanager accepted the alert.
        """
    )

    @Option(name: .long, help: ArgumentHelp("The desired-state file (default: the revision the agent last applied, \(StateOptions.lastApplied)).",
                                            valueName: "FILE"))
    var state: String?

    @Option(name: .long, help: ArgumentHelp("Alertmanager's URL, such as http://10.43.12.7:9093 (default: found through the cluster).",
                                            valueName: "URL"))
    var alertmanager: String?

    @Option(name: .long, help: ArgumentHelp("The cluster's kubeconfig (default: \(PassOptions.defaultKubeconfig)).", valueName: "FILE"))
    var kubeconfig: String?

    func run() async throws {
        let platform = try StateOptions.load(state: state)
        guard let spec = platform.spec.alerting else {
            Terminal.error("error: the desired state declares no spec.alerting")
            throw ExitCode.failure
        }
        let base: String
        if let alertmanager { base = alertmanager } else { base = try await discover(platform, spec) }
        let now = SystemWallClock().now()
        let alert = JSONValue.array([.object([
            "labels": .object([
                "alertname": .string(AlertingConfig.testAlertName), "severity": .string("critical"),
                "source": .string("nodeagent alerts test"), "node": .string(platform.name.value),
                // A new alert each run (Alertmanager would take a repeat for the same one).
                "test_id": .string(String(now.millisecondsSinceEpoch)),
            ]),
            "annotations": .object([
                "summary": .string("Test alert from nodeagent on \(platform.name): email alerting works"),
                "description": .string("Sent by `nodeagent alerts test` at \(now.rfc3339). No action needed; it resolves by itself in 5 minutes."),
            ]),
            "startsAt": .string(now.rfc3339), "endsAt": .string(now.adding(TimeSpan(milliseconds: 300_000)).rfc3339),
        ])])
        let transport = CurlTransport(config: Kubeconfig(server: base, caPEM: nil))
        let response: HTTPResponse
        do {
            response = try await transport.send(HTTPRequest("POST", "/api/v2/alerts", headers: [("Content-Type", "application/json")],
                                                            body: Array(alert.jsonText.utf8), timeout: .seconds(15)))
        } catch {
            Terminal.error("error: cannot reach Alertmanager at \(base): \(error)")
            throw ExitCode.failure
        }
        guard response.status == 200 else {
            Terminal.error("error: Alertmanager at \(base) answered \(response.status): \(String(decoding: response.body.prefix(500), as: UTF8.self))")
            throw ExitCode.failure
        }
        let to = spec.email.map { "expect an email to \($0.to.map(\.description).joined(separator: ", ")) within a minute" }
            ?? "no email receiver is configured (spec.alerting.email), so no email will come"
        print("Alertmanager at \(base) accepted \(AlertingConfig.testAlertName) (severity critical): \(to)")
    }

    /// The release's Alertmanager Service (label `app=kube-prometheus-stack-alertmanager`).
    func discover(_ platform: Platform, _ spec: AlertingSpec) async throws -> String {
        guard let namespace = platform.spec.helmReleases?.first(where: { $0.name == spec.release })?.namespace.value else {
            Terminal.error("error: spec.alerting.release names no declared Helm release")
            throw ExitCode.failure
        }
        do {
            let api = KubeAPI(config: try Kubeconfig.load(path: kubeconfig ?? PassOptions.defaultKubeconfig))
            let services = try await api.list(ResourceRef(plural: "services", namespace: namespace),
                                              labelSelector: "app=kube-prometheus-stack-alertmanager")
            guard let service = services.first(where: { ($0["spec"]?["clusterIP"]?.string ?? "None") != "None" }),
                  let ip = service["spec"]?["clusterIP"]?.string else {
                Terminal.error("error: no Alertmanager Service in namespace \(namespace); pass --alertmanager URL")
                throw ExitCode.failure
            }
            let port = (service["spec"]?["ports"]?.array ?? []).first { $0["name"]?.string == "http-web" }?["port"]?.int ?? 9093
            return "http://\(ip):\(port)"
        } catch let error as DiagnosticsError {
            for d in error.diagnostics { Terminal.error(d.description) }
            throw ExitCode.failure
        } catch let exit as ExitCode {
            throw exit
        } catch {
            Terminal.error("error: cannot find Alertmanager through the cluster: \(error); pass --alertmanager URL")
            throw ExitCode.failure
        }
    }
}
