import Foundation
import Testing
import TestSupport
import KubeClient
import KubeTestServer
import Reconcilers
import YAML

@Suite("Watches against the test API server", .serialized)
struct WatchTests {
    func withServer(_ body: (KubeTestServer, KubeAPI) async throws -> Void) async throws {
        let s = try await KubeTestServer()
        let api = KubeAPI(config: Kubeconfig(server: s.url, caPEM: s.tls.pem("ca.pem"), clientCertificatePEM: s.tls.pem("client.pem"),
                                             clientKeyPEM: s.tls.pem("client.key")), retry: RetryPolicy(initialDelay: .milliseconds(20)))
        do {
            try await body(s, api)
        } catch {
            s.stop()
            throw error
        }
        s.stop()
    }

    static let ref = ResourceRef(plural: "configmaps", namespace: "default")

    static func cm(_ name: String, _ value: String) -> JSONValue {
        .object(["apiVersion": .string("v1"), "kind": .string("ConfigMap"),
                 "metadata": .object(["name": .string(name), "namespace": .string("default")]), "data": .object(["v": .string(value)])])
    }

    static func describe(_ e: WatchEvent) -> String {
        func name(_ o: JSONValue) -> String { "\(o["metadata"]?["name"]?.string ?? "?")=\(o["data"]?["v"]?.string ?? "")" }
        switch e {
        case .added(let o): return "ADDED \(name(o))"
        case .modified(let o): return "MODIFIED \(name(o))"
        case .deleted(let o): return "DELETED \(name(o))"
        case .bookmark: return "BOOKMARK"
        case .relisted(let items): return "RELISTED " + items.map(name).joined(separator: ",")
        }
    }

    /// Collects `count` non-bookmark events from a watch while `act` runs.
    func collect(_ api: KubeAPI, _ count: Int, act: @escaping @Sendable () async throws -> Void) async throws -> [String] {
        try await withThrowingTaskGroup(of: [String].self) { group in
            group.addTask {
                var seen: [String] = []
                for try await event in api.watch(Self.ref) {
                    if case .bookmark = event { continue }
                    seen.append(Self.describe(event))
                    if seen.count == count { break }
                }
                return seen
            }
            group.addTask {
                try await act()
                try await Task.sleep(for: .seconds(20))
                return ["timed out"]
            }
            let first = try await group.next()!
            group.cancelAll()
            return first
        }
    }

    @Test func aWatchSeesEveryChangeInOrder() async throws {
        try await withServer { (s: KubeTestServer, api: KubeAPI) async throws in
            _ = try await api.apply(Self.cm("before", "0"), to: ResourceRef(plural: "configmaps", namespace: "default", name: "before"))
            let seen = try await collect(api, 4) {
                try await s.waitForWatches()
                _ = try await api.apply(Self.cm("x", "1"), to: ResourceRef(plural: "configmaps", namespace: "default", name: "x"))
                _ = try await api.apply(Self.cm("x", "2"), to: ResourceRef(plural: "configmaps", namespace: "default", name: "x"))
                try await api.delete(ResourceRef(plural: "configmaps", namespace: "default", name: "x"))
            }
            #expect(seen == ["RELISTED before=0", "ADDED x=1", "MODIFIED x=2", "DELETED x=2"])
        }
    }

    @Test func aWatchSurvivesADroppedConnectionWithoutLosingOrRepeatingEvents() async throws {
        try await withServer { (s: KubeTestServer, api: KubeAPI) async throws in
            let seen = try await collect(api, 3) {
                try await s.waitForWatches()
                _ = try await api.apply(Self.cm("a", "1"), to: ResourceRef(plural: "configmaps", namespace: "default", name: "a"))
                try await s.waitForWatches()   // a=1 was sent before the drop
                s.dropWatches()
                // Changed while no watch is connected: the resumed watch must still deliver it.
                s.put(KubeTestServer.builtIn[1], namespace: "default", Self.cm("b", "1"))
            }
            #expect(seen == ["RELISTED ", "ADDED a=1", "ADDED b=1"])
            #expect(s.requests.filter { $0 == "GET /api/v1/namespaces/default/configmaps" }.count >= 3, "list, watch, resumed watch")
        }
    }

    @Test func aWatchThatFellBehindRelists() async throws {
        try await withServer { (s: KubeTestServer, api: KubeAPI) async throws in
            let seen = try await collect(api, 3) {
                try await s.waitForWatches()
                _ = try await api.apply(Self.cm("a", "1"), to: ResourceRef(plural: "configmaps", namespace: "default", name: "a"))
                try await s.waitForWatches()   // a=1 was sent before the drop
                // The watch is dropped before b exists, and b's history is gone: resuming from
                // the old version gets 410 Gone, whatever the machine's load.
                s.dropWatchesThenChangeAndCompact(KubeTestServer.builtIn[1], namespace: "default", Self.cm("b", "1"))
            }
            #expect(seen == ["RELISTED ", "ADDED a=1", "RELISTED a=1,b=1"])
        }
    }

    @Test func kubectlWatchSeesAnObjectThatKubeAPIApplies() async throws {
        try await withServer { (s: KubeTestServer, api: KubeAPI) async throws in
            let dir = Fixtures.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try s.writeKubeconfig(to: dir + "/kubeconfig")
            async let watched = SystemCommandRunner().run(Command("timeout", ["6", "kubectl", "--kubeconfig", dir + "/kubeconfig",
                                                                            "--cache-dir", dir + "/cache", "get", "configmaps", "-n", "default",
                                                                            "-w", "-o", "name"], timeout: .seconds(30)))
            try await s.waitForWatches()   // kubectl's watch is open
            _ = try await api.apply(Self.cm("from-kubeapi", "1"), to: ResourceRef(plural: "configmaps", namespace: "default", name: "from-kubeapi"))
            let result = try await watched
            #expect(result.stdout.contains("configmap/from-kubeapi"), "\(result.stdout)\n\(result.stderr)")
        }
    }
}
