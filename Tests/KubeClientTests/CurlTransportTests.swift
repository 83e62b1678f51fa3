import Testing
import TestSupport
import KubeClient

/// The HTTPS transport against a real TLS peer (`openssl s_server`) that demands a client
/// certificate signed by the test CA.
@Suite("CurlTransport over real TLS with client certificates", .serialized)
struct CurlTransportTests {
    func config(_ peer: TLSTestPeer, ca: String = "ca.pem", client: String = "client") -> Kubeconfig {
        Kubeconfig(server: "https://127.0.0.1:\(peer.port)", caPEM: peer.pem(ca),
                   clientCertificatePEM: peer.pem("\(client).pem"), clientKeyPEM: peer.pem("\(client).key"))
    }

    @Test func mutualTLSWithInMemoryCertificates() async throws {
        let peer = try await TLSTestPeer()
        defer { peer.stop() }
        let transport = CurlTransport(config: config(peer))
        let response = try await transport.send(HTTPRequest("GET", "/"))
        #expect(response.status == 200)
        let page = String(decoding: response.body, as: UTF8.self)
        // s_server's status page shows the certificate it received from us.
        #expect(page.contains("Subject: O=system:masters, CN=system:admin"))
        // The same transport again: requests queue on its one connection thread.
        #expect(try await transport.send(HTTPRequest("GET", "/")).status == 200)
    }

    @Test(arguments: [
        ("other-ca.pem", "client", 60),       // we do not trust the server: the wrong CA
        ("ca.pem", "expired-client", 56),     // the server refuses our expired certificate
        ("ca.pem", "stranger-client", 56),    // the server refuses a certificate from another CA
    ])
    func refusedHandshakesAreTransportErrors(ca: String, client: String, curlCode: Int) async throws {
        let peer = try await TLSTestPeer()
        defer { peer.stop() }
        do {
            _ = try await CurlTransport(config: config(peer, ca: ca, client: client)).send(HTTPRequest("GET", "/"))
            Issue.record("the handshake succeeded")
        } catch {
            #expect(error.code == curlCode, "\(error)")
        }
    }

    @Test func aClosedPortIsAConnectionError() async throws {
        let k = Kubeconfig(server: "https://127.0.0.1:1", caPEM: nil)
        do {
            _ = try await CurlTransport(config: k).send(HTTPRequest("GET", "/", timeout: .seconds(5)))
            Issue.record("connected")
        } catch {
            #expect(error.code == 7, "\(error)")   // CURLE_COULDNT_CONNECT
        }
    }
}
