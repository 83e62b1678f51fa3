import Foundation
import Testing
import TestSupport
import KubeClient
import YAML

@Suite("Kubeconfig")
struct KubeconfigTests {
    static let ca = Data("-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n".utf8).base64EncodedString()
    static let cert = Data("-----BEGIN CERTIFICATE-----\nMIIBclient\n-----END CERTIFICATE-----\n".utf8).base64EncodedString()
    static let key = Data("-----BEGIN EC PRIVATE KEY-----\nMHcfake\n-----END EC PRIVATE KEY-----\n".utf8).base64EncodedString()

    /// The shape K3s writes to /etc/rancher/k3s/k3s.yaml.
    static let k3s = """
        apiVersion: v1
        clusters:
        - cluster:
            certificate-authority-data: \(ca)
            server: https://127.0.0.1:6443
          name: default
        contexts:
        - context:
            cluster: default
            user: default
          name: default
        current-context: default
        kind: Config
        preferences: {}
        users:
        - name: default
          user:
            client-certificate-data: \(cert)
            client-key-data: \(key)

        """

    func parse(_ text: String) throws(DiagnosticsError) -> Kubeconfig {
        try Kubeconfig.parse(Array(text.utf8), file: "k3s.yaml")
    }

    func failure(_ text: String) -> Diagnostic? {
        do {
            _ = try parse(text)
            return nil
        } catch {
            return error.diagnostics.first
        }
    }

    @Test func readsWhatK3sWrites() throws {
        let k = try parse(Self.k3s)
        #expect(k.server == "https://127.0.0.1:6443")
        #expect(k.contextName == "default")
        #expect(String(decoding: try #require(k.caPEM), as: UTF8.self).hasPrefix("-----BEGIN CERTIFICATE-----"))
        #expect(String(decoding: try #require(k.clientKeyPEM), as: UTF8.self).contains("EC PRIVATE KEY"))
        #expect(k.token == nil && !k.insecureSkipTLSVerify)
    }

    @Test func badBase64NamesFileLineAndColumn() {
        let d = failure(Self.k3s.replacingOccurrences(of: "client-key-data: \(Self.key)", with: "client-key-data: not*base64"))
        #expect(d?.description == "k3s.yaml:19:22: error: users[0].user.client-key-data: client-key-data is not valid base64")
    }

    @Test func aContextNamingAMissingUserIsRefused() {
        let d = failure(Self.k3s.replacingOccurrences(of: "    user: default", with: "    user: admin"))
        #expect(d?.mark == Mark(line: 10, column: 11))
        #expect(d?.message.contains("names user \"admin\", which users does not declare") == true)
    }

    @Test func execPluginsAreRefusedWithAReason() {
        let d = failure(Self.k3s.replacingOccurrences(of: "    client-certificate-data: \(Self.cert)\n    client-key-data: \(Self.key)\n",
                                                      with: "    exec: {command: aws}\n"))
        #expect(d?.code == .unsupported)
        #expect(d?.path.description == "users[0].user.exec")
    }

    @Test func tokenFileIsReadAtLoad() throws {
        let dir = Fixtures.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "s3cr3t-token\n".write(toFile: dir + "/token", atomically: true, encoding: .utf8)
        let k = try parse(Self.k3s.replacingOccurrences(of: "    client-certificate-data: \(Self.cert)\n    client-key-data: \(Self.key)\n",
                                                        with: "    tokenFile: \(dir)/token\n"))
        #expect(k.token == "s3cr3t-token")
        #expect(k.clientCertificatePEM == nil)
    }

    @Test func unknownKeysOfOtherToolsAreIgnored() throws {
        let k = try parse(Self.k3s.replacingOccurrences(of: "preferences: {}", with: "preferences: {colors: true}\nextensions: []"))
        #expect(k.server == "https://127.0.0.1:6443")
    }
}
