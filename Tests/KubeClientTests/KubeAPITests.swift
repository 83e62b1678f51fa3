import Testing
import TestSupport
import KubeClient
import KubeTestServer
import YAML

/// KubeAPI against the test API server, over real TLS with client certificates and tokens.
@Suite("KubeAPI against the test API server", .serialized)
struct KubeAPITests {
    func withServer(_ body: (KubeTestServer) async throws -> Void) async throws {
        let server = try await KubeTestServer()
        do {
            try await body(server)
        } catch {
            server.stop()
            throw error
        }
        server.stop()
    }

    func client(_ s: KubeTestServer, cert: String = "client", retry: RetryPolicy = RetryPolicy(initialDelay: .milliseconds(10))) -> KubeAPI {
        KubeAPI(config: Kubeconfig(server: s.url, caPEM: s.tls.pem("ca.pem"), clientCertificatePEM: s.tls.pem("\(cert).pem"),
                                   clientKeyPEM: s.tls.pem("\(cert).key")), retry: retry)
    }

    static func configMap(_ name: String, _ data: [String: String], labels: [String: String] = [:]) -> JSONValue {
        .object([
            "apiVersion": .string("v1"), "kind": .string("ConfigMap"),
            "metadata": .object([.init("name", .string(name)), .init("namespace", .string("default")),
                                 .init("labels", .object(labels.sorted { $0.key < $1.key }.map { .init($0.key, .string($0.value)) }))]),
            "data": .object(data.sorted { $0.key < $1.key }.map { .init($0.key, .string($0.value)) }),
        ])
    }

    static func ref(_ name: String? = nil) -> ResourceRef { ResourceRef(plural: "configmaps", namespace: "default", name: name) }

    @Test func applyGetListDeleteOverMutualTLS() async throws {
        try await withServer { (s: KubeTestServer) async throws in
            let api = client(s)
            #expect(try await api.serverVersion() == "v1.31.4+k3s1")
            let created = try await api.apply(Self.configMap("a", ["k": "v"], labels: ["app": "x"]), to: Self.ref("a"))
            #expect(created["metadata"]?["uid"]?.string?.isEmpty == false)
            #expect(try await api.get(Self.ref("a"))["data"]?["k"]?.string == "v")
            for n in ["b", "c", "d", "e"] { _ = try await api.apply(Self.configMap(n, ["k": n], labels: ["app": n == "e" ? "y" : "x"]), to: Self.ref(n)) }
            let before = s.requests.count
            let all = try await api.list(Self.ref(), pageSize: 2)
            #expect(all.compactMap { $0["metadata"]?["name"]?.string } == ["a", "b", "c", "d", "e"])
            #expect(s.requests.count - before == 3, "five objects in pages of two: three requests")
            let xs = try await api.list(Self.ref(), labelSelector: "app=x")
            #expect(xs.count == 4)
            #expect(try await api.delete(Self.ref("a")))
            #expect(try await !api.delete(Self.ref("a")))
            do {
                _ = try await api.get(Self.ref("a"))
                Issue.record("found a deleted object")
            } catch let error as KubeStatusError {
                #expect(error.code == 404 && error.reason == "NotFound")
                #expect(error.message == "configmaps \"a\" not found")
            }
        }
    }

    @Test func serverSideApplyIsIdempotentAndFieldManagersConflict() async throws {
        try await withServer { (s: KubeTestServer) async throws in
            let api = client(s)
            let first = try await api.apply(Self.configMap("cm", ["owned": "1"]), to: Self.ref("cm"))
            let again = try await api.apply(Self.configMap("cm", ["owned": "1"]), to: Self.ref("cm"))
            #expect(again["metadata"]?["resourceVersion"] == first["metadata"]?["resourceVersion"], "a second identical apply changes nothing")
            let managers = again["metadata"]?["managedFields"]?.array?.compactMap { $0["manager"]?.string }
            #expect(managers == ["nodeagent"])
            // Somebody else (kubectl, by hand) changes a field nodeagent owns: without force, 409.
            let other = Self.configMap("cm", ["owned": "2"])
            let path = "/api/v1/namespaces/default/configmaps/cm?fieldManager=kubectl"
            let conflict = try await s.rawApply(other, path: path)
            #expect(conflict.status == 409)
            #expect(String(decoding: conflict.body, as: UTF8.self).contains("\"reason\":\"Conflict\""))
            // nodeagent applies with force: it keeps its field.
            let forced = try await api.apply(Self.configMap("cm", ["owned": "1", "extra": "x"]), to: Self.ref("cm"))
            #expect(forced["data"]?["extra"]?.string == "x")
            #expect(Int(forced["metadata"]?["resourceVersion"]?.string ?? "") ?? 0 > Int(first["metadata"]?["resourceVersion"]?.string ?? "") ?? 0)
            // A field dropped from nodeagent's apply goes away.
            let shrunk = try await api.apply(Self.configMap("cm", ["owned": "1"]), to: Self.ref("cm"))
            #expect(shrunk["data"]?["extra"] == nil)
        }
    }

    @Test func dryRunComputesWithoutStoring() async throws {
        try await withServer { (s: KubeTestServer) async throws in
            let api = client(s)
            let preview = try await api.apply(Self.configMap("dry", ["k": "v"]), to: Self.ref("dry"), dryRun: true)
            #expect(preview["data"]?["k"]?.string == "v")
            await #expect(throws: KubeStatusError.self) { try await api.get(Self.ref("dry")) }
        }
    }

    @Test func bearerTokensAreChecked() async throws {
        try await withServer { (s: KubeTestServer) async throws in
            let good = KubeAPI(config: Kubeconfig(server: s.tokenURL, caPEM: s.tls.pem("ca.pem"), token: s.token))
            #expect(try await good.serverVersion() == "v1.31.4+k3s1")
            let bad = KubeAPI(config: Kubeconfig(server: s.tokenURL, caPEM: s.tls.pem("ca.pem"), token: "wrong"))
            do {
                _ = try await bad.serverVersion()
                Issue.record("a wrong token was accepted")
            } catch let error as KubeStatusError {
                #expect(error.code == 401 && error.reason == "Unauthorized")
            }
        }
    }

    @Test func aCertificateFromAnotherCAIsRefusedByTheServer() async throws {
        try await withServer { (s: KubeTestServer) async throws in
            await #expect(throws: TransportError.self) { try await client(s, cert: "stranger-client").serverVersion() }
            await #expect(throws: TransportError.self) { try await client(s, cert: "expired-client").serverVersion() }
        }
    }

    @Test func retriesRecoverFrom503AndStopAtTheirCap() async throws {
        try await withServer { (s: KubeTestServer) async throws in
            s.failNext(2, status: 503)
            #expect(try await client(s).serverVersion() == "v1.31.4+k3s1")
            #expect(s.requests.suffix(3) == ["GET /version", "GET /version", "GET /version"])
            s.failNext(10, status: 429)
            let capped = client(s, retry: RetryPolicy(attempts: 3, initialDelay: .milliseconds(5)))
            let before = s.requests.count
            do {
                _ = try await capped.serverVersion()
                Issue.record("succeeded through ten 429s")
            } catch let error as KubeStatusError {
                #expect(error.code == 429)
            }
            #expect(s.requests.count - before == 3, "three attempts, no more")
        }
    }

    @Test func retryAfterIsHonoured() async throws {
        try await withServer { (s: KubeTestServer) async throws in
            s.failNext(1, status: 429, retryAfter: 1)
            let clock = ContinuousClock()
            let start = clock.now
            #expect(try await client(s).serverVersion() == "v1.31.4+k3s1")
            #expect(clock.now - start >= .seconds(1))
        }
    }

    @Test func discoveryTellsWhetherAKindIsServed() async throws {
        try await withServer { (s: KubeTestServer) async throws in
            let api = client(s)
            #expect(try await !api.serves(group: "helm.cattle.io", version: "v1", plural: "helmcharts"))
            s.register(.init(group: "helm.cattle.io", version: "v1", kind: "HelmChart", plural: "helmcharts", namespaced: true))
            #expect(try await api.serves(group: "helm.cattle.io", version: "v1", plural: "helmcharts"))
            #expect(try await api.serves(group: "", version: "v1", plural: "configmaps"))
        }
    }
}

@Suite("KubeAPI: errors, timeouts and keep-alive", .serialized)
struct KubeAPIErrorTests {
    static let ref = ResourceRef(plural: "configmaps", namespace: "default", name: "x")

    @Test func statusBodiesBecomeTypedErrors() async throws {
        let s = try await KubeTestServer()
        defer { s.stop() }
        let reader = KubeAPI(config: Kubeconfig(server: s.tokenURL, caPEM: s.tls.pem("ca.pem"), token: s.readOnlyToken))
        #expect(try await reader.serverVersion() == "v1.31.4+k3s1")
        do {
            _ = try await reader.apply(KubeAPITests.configMap("x", ["k": "v"]), to: Self.ref)
            Issue.record("a read-only token wrote")
        } catch let error as KubeStatusError {
            #expect(error.code == 403 && error.reason == "Forbidden")
        }
        let api = KubeAPI(config: Kubeconfig(server: s.url, caPEM: s.tls.pem("ca.pem"), clientCertificatePEM: s.tls.pem("client.pem"),
                                             clientKeyPEM: s.tls.pem("client.key")))
        do {
            _ = try await api.apply(KubeAPITests.configMap("Bad_Name", [:]), to: ResourceRef(plural: "configmaps", namespace: "default", name: "Bad_Name"))
            Issue.record("an invalid name was accepted")
        } catch let error as KubeStatusError {
            #expect(error.code == 422 && error.reason == "Invalid")
        }
        do {
            _ = try await api.apply(KubeAPITests.configMap("y", [:]), to: Self.ref)   // the URL names x, the body y
            Issue.record("a mismatched body was accepted")
        } catch let error as KubeStatusError {
            #expect(error.code == 400 && error.reason == "BadRequest")
        }
    }

    @Test func everyRequestHasATimeout() async throws {
        let s = try await KubeTestServer()
        defer { s.stop() }
        let api = KubeAPI(config: Kubeconfig(server: s.url, caPEM: s.tls.pem("ca.pem"), clientCertificatePEM: s.tls.pem("client.pem"),
                                             clientKeyPEM: s.tls.pem("client.key")), retry: RetryPolicy(attempts: 1), timeout: .milliseconds(500))
        s.delayNext(1, by: .seconds(2))
        do {
            _ = try await api.serverVersion()
            Issue.record("no timeout")
        } catch let error as TransportError {
            #expect(error.isTimeout, "\(error)")
        }
    }

    @Test func requestsReuseOneConnection() async throws {
        let s = try await KubeTestServer()
        defer { s.stop() }
        let api = KubeAPI(config: Kubeconfig(server: s.url, caPEM: s.tls.pem("ca.pem"), clientCertificatePEM: s.tls.pem("client.pem"),
                                             clientKeyPEM: s.tls.pem("client.key")))
        for i in 0..<10 {
            _ = try await api.apply(KubeAPITests.configMap("c\(i)", ["i": "\(i)"]), to: ResourceRef(plural: "configmaps", namespace: "default", name: "c\(i)"))
        }
        #expect(s.connections == 1, "ten requests, one TLS connection")
    }
}
