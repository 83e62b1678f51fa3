import Foundation
import Testing
import TestSupport
import KubeClient
import KubeTestServer
import Reconcilers
import YAML

/// Not a test: the benchmark of issue 3, run by bench/kube-apply.sh (NODEAGENT_BENCH=1).
/// Server-side apply of 100 objects (50 ConfigMaps, 50 HelmCharts) to the test API server:
/// KubeAPI versus `kubectl apply --server-side -f DIR`, in one run, against the same server.
@Suite("Benchmark: server-side apply of 100 objects", .enabled(if: ProcessInfo.processInfo.environment["NODEAGENT_BENCH"] != nil))
struct KubeApplyBenchmark {
    static func objects(prefix: String) -> [(ResourceRef, JSONValue)] {
        (0..<100).map { i in
            let name = "\(prefix)-\(i)"
            if i % 2 == 0 {
                return (ResourceRef(plural: "configmaps", namespace: "default", name: name),
                        .object(["apiVersion": .string("v1"), "kind": .string("ConfigMap"),
                                 "metadata": .object(["name": .string(name), "namespace": .string("default"),
                                                      "labels": .object(["app.kubernetes.io/managed-by": .string("nodeagent")])]),
                                 "data": .object(["index": .string("\(i)"), "payload": .string(String(repeating: "x", count: 512))])]))
            }
            return (ResourceRef(group: "helm.cattle.io", version: "v1", plural: "helmcharts", namespace: "kube-system", name: name),
                    .object(["apiVersion": .string("helm.cattle.io/v1"), "kind": .string("HelmChart"),
                             "metadata": .object(["name": .string(name), "namespace": .string("kube-system")]),
                             "spec": .object(["chart": .string("chart-\(i)"), "repo": .string("https://charts.example.com"),
                                              "version": .string("1.\(i).0"), "targetNamespace": .string("ns-\(i)"),
                                              "valuesContent": .string("replicaCount: 2\n")])]))
        }
    }

    @Test func kubeAPIVersusKubectl() async throws {
        let s = try await KubeTestServer()
        let dir = Fixtures.temporaryDirectory()
        defer {
            s.stop()
            try? FileManager.default.removeItem(atPath: dir)
        }
        s.register(.init(group: "helm.cattle.io", version: "v1", kind: "HelmChart", plural: "helmcharts", namespaced: true))
        let clock = ContinuousClock()

        // KubeAPI: from a new client (TLS handshake included) to the 100th apply.
        let ours = Self.objects(prefix: "kubeapi")
        let start = clock.now
        let api = KubeAPI(config: Kubeconfig(server: s.url, caPEM: s.tls.pem("ca.pem"), clientCertificatePEM: s.tls.pem("client.pem"),
                                             clientKeyPEM: s.tls.pem("client.key")))
        _ = try await api.serverVersion()
        var perApply: [Duration] = []
        for (ref, object) in ours {
            let t = clock.now
            _ = try await api.apply(object, to: ref)
            perApply.append(clock.now - t)
        }
        let kubeAPITotal = clock.now - start

        // kubectl: the same kind of objects, as files in one directory.
        try FileManager.default.createDirectory(atPath: dir + "/objects", withIntermediateDirectories: true)
        for (i, (_, object)) in Self.objects(prefix: "kubectl").enumerated() {
            try object.jsonText.write(toFile: "\(dir)/objects/\(String(format: "%03d", i)).json", atomically: true, encoding: .utf8)
        }
        try s.writeKubeconfig(to: dir + "/kubeconfig")
        let t = clock.now
        let kubectl = try await SystemCommandRunner().run(Command("kubectl", ["--kubeconfig", dir + "/kubeconfig", "--cache-dir", dir + "/cache",
                                                                             "apply", "--server-side", "--validate=false", "-f", dir + "/objects"],
                                                                  timeout: .seconds(300)))
        let kubectlTotal = clock.now - t
        #expect(kubectl.exitCode == 0, "\(kubectl.stderr)")
        #expect(kubectl.stdout.split(separator: "\n").count == 100)

        func ms(_ d: Duration) -> Double { Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15 }
        let sorted = perApply.map(ms).sorted()
        let median = sorted[sorted.count / 2]
        let ratio = ms(kubectlTotal) / ms(kubeAPITotal)
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.split(separator: "\n")
            .first { $0.hasPrefix("model name") }?.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "unknown CPU"
        let date = ISO8601DateFormatter().string(from: Date()).prefix(16).replacingOccurrences(of: "T", with: " ")
        let section = """

            ## server-side apply of 100 objects: KubeAPI vs kubectl — \(date) UTC

            Machine: \(ProcessInfo.processInfo.activeProcessorCount) cores (\(cpu)), \(ProcessInfo.processInfo.physicalMemory >> 30) GiB. Command: `bench/kube-apply.sh` (release build; the test API server, TLS by socat with client certificates; 50 ConfigMaps and 50 HelmCharts each).

            | client | total | median per apply |
            |---|---|---|
            | KubeAPI (new client, TLS handshake included) | \(String(format: "%.1f", ms(kubeAPITotal))) ms | \(String(format: "%.2f", median)) ms |
            | `kubectl apply --server-side -f DIR` | \(String(format: "%.0f", ms(kubectlTotal))) ms | — |

            Ratio kubectl / KubeAPI: \(String(format: "%.0f", ratio))× (target ≥ 10×: \(ratio >= 10 ? "met" : "MISSED")). Median per apply once connected: \(String(format: "%.2f", median)) ms (target ≤ 2 ms: \(median <= 2 ? "met" : "MISSED")).

            """
        let path = Fixtures.repository + "/BENCHMARKS.md"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        handle.seekToEndOfFile()
        handle.write(Data(section.utf8))
        try handle.close()
        print(section)
    }
}
