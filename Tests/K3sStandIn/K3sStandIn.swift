import Foundation
import KubeTestServer
import Reconcilers
import YAML
#if canImport(Glibc)
import Glibc
#endif

/// A stand-in K3s for the guest suite (Tests/e2e): the KubeClient test API server playing
/// `k3s server` on a real node under real systemd. No K3s binary can be had on the machines
/// the suite runs on; this one does what nodeagent relies on:
///
/// - `k3s --version` prints `k3s version VERSION (stand-in)`;
/// - `k3s server` makes its own CA and client certificate, serves the Kubernetes API on
///   :6443 (client certificates required), writes `/etc/rancher/k3s/k3s.yaml` (0600) like K3s,
///   serves `helm.cattle.io/v1` HelmCharts and plays helm-controller (an install Job per chart,
///   a rolled-out Deployment; installing `argo-cd` establishes Argo CD's Application CRD) and
///   Argo CD (each Application in `argocd` is reported Synced and Healthy);
/// - a "good" release registers the node (`node-name` from `/etc/rancher/k3s/config.yaml`)
///   Ready at its version and renews its Lease every 2 s; a "bad" one never gets Ready.
///
/// Version, behaviour and the PKI script are not compiled in: `Tests/e2e/run.sh` appends them
/// to a copy of this executable after a marker line (the loader ignores bytes past the ELF
/// segments), so each "release" is a different file with its own sha256.
@main
enum K3sStandIn {
    struct Release: Decodable {
        var version: String
        var mode: String
        var pki: String
    }

    static let marker = Array("\n#NODEAGENT-K3S-STANDIN#\n".utf8)

    static func main() async throws {
        let release = try readRelease()
        let arguments = Array(CommandLine.arguments.dropFirst())
        if arguments.first == "--version" || arguments.first == "-v" {
            print("k3s version \(release.version) (stand-in)")
            return
        }
        guard arguments.first == "server" else {
            FileHandle.standardError.write(Data("usage: k3s --version | k3s server\n".utf8))
            exit(1)
        }
        let pki = FileManager.default.temporaryDirectory.appendingPathComponent("k3s-standin-pki-\(getpid()).py").path
        try release.pki.write(toFile: pki, atomically: true, encoding: .utf8)
        let server = try await KubeTestServer(pkiScript: pki, port: 6443)
        try? FileManager.default.removeItem(atPath: pki)
        // Stopped like K3s: the TLS proxies (socat) go with it, not only when systemd kills the cgroup.
        signal(SIGTERM, SIG_IGN)
        let stop = DispatchSource.makeSignalSource(signal: SIGTERM)
        stop.setEventHandler {
            server.stop()
            exit(0)
        }
        stop.resume()
        // The HelmChart CRDs of the helm-controller this K3s release bundles, pruning included.
        let helmController: HelmControllerVersion = (try? K3sVersion(parsing: release.version))
            .flatMap(BundledHelmController.servesValuesSecrets) == true ? .v0_17_1 : .v0_16_5
        server.serveHelmCRDs(helmController)
        server.gitVersion = release.version
        try writeKubeconfig(server)
        let node = nodeName()
        print("stand-in k3s \(release.version) (\(release.mode)): serving on :6443 as node \(node)")
        fflush(nil)
        // K3s's unit is Type=notify: like K3s, say READY=1 once the API serves.
        notifySystemd("READY=1")
        let controller = FakeHelmController(server: server, version: helmController)
        let nodes = KubeTestServer.builtIn.first { $0.plural == "nodes" }!
        let leases = KubeTestServer.builtIn.first { $0.plural == "leases" }!
        var argoInstalled = false
        while true {
            if release.mode == "good" {
                server.put(nodes, .object([
                    "apiVersion": .string("v1"), "kind": .string("Node"), "metadata": .object(["name": .string(node)]),
                    "status": .object(["conditions": .array([.object(["type": .string("Ready"), "status": .string("True")])]),
                                       "nodeInfo": .object(["kubeletVersion": .string(release.version)])]),
                ]))
                server.put(leases, namespace: "kube-node-lease", .object([
                    "apiVersion": .string("coordination.k8s.io/v1"), "kind": .string("Lease"),
                    "metadata": .object(["name": .string(node), "namespace": .string("kube-node-lease")]),
                    "spec": .object(["holderIdentity": .string(node), "leaseDurationSeconds": .int(40),
                                     "renewTime": .string(server.now())]),
                ]))
                controller.step()
                if !argoInstalled, server.objects(KubeTestServer.helmChart, namespace: "kube-system").contains(where: { chart in
                    chart["spec"]?["chart"]?.string == "argo-cd"
                        && server.object("jobs", namespace: "kube-system", name: "helm-install-\(chart["metadata"]?["name"]?.string ?? "")",
                                         groupVersion: "batch/v1")?["status"]?["succeeded"]?.int == 1
                }) {
                    controller.establishApplicationCRD()
                    argoInstalled = true
                    print("argo-cd installed: Application CRD established")
                    fflush(nil)
                }
                // Argo CD's application controller: every Application synced and healthy.
                for app in server.objects(KubeTestServer.application, namespace: "argocd")
                where app[["status", "sync", "status"]]?.string != "Synced" {
                    var synced = app
                    synced[["status", "sync", "status"]] = .string("Synced")
                    synced[["status", "health", "status"]] = .string("Healthy")
                    server.put(KubeTestServer.application, namespace: "argocd", synced)
                }
            }
            try await Task.sleep(for: .seconds(2))
        }
    }

    /// sd_notify(3): a datagram to $NOTIFY_SOCKET (a path, or an abstract name after `@`).
    static func notifySystemd(_ message: String) {
        guard let path = ProcessInfo.processInfo.environment["NOTIFY_SOCKET"], !path.isEmpty else { return }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var name = Array(path.utf8)
        if name.first == UInt8(ascii: "@") { name[0] = 0 }
        let length = min(name.count, MemoryLayout.size(ofValue: address.sun_path) - 1)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for i in 0..<length { raw[i] = name[i] }
        }
        let size = socklen_t(MemoryLayout<sa_family_t>.size + length)
        _ = message.withCString { text in
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, text, strlen(text), 0, $0, size) }
            }
        }
    }

    /// The JSON after the last marker in this executable.
    static func readRelease() throws -> Release {
        // The release is at the end: read the last MiB, not the whole 60 MiB executable.
        let file = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/proc/self/exe"))
        defer { try? file.close() }
        let size = try file.seekToEnd()
        try file.seek(toOffset: size > 1 << 20 ? size - (1 << 20) : 0)
        let bytes = [UInt8](try file.readToEnd() ?? Data())
        guard let start = lastRange(of: marker, in: bytes) else {
            FileHandle.standardError.write(Data("k3s stand-in: no release appended (see Tests/e2e/run.sh)\n".utf8))
            exit(1)
        }
        return try JSONDecoder().decode(Release.self, from: Data(bytes[(start + marker.count)...]))
    }

    static func lastRange(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for i in stride(from: haystack.count - needle.count, through: 0, by: -1) where haystack[i] == needle[0] {
            if Array(haystack[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }

    /// Like K3s: `/etc/rancher/k3s/k3s.yaml`, mode 0600, replaced atomically.
    static func writeKubeconfig(_ server: KubeTestServer) throws {
        let directory = "/etc/rancher/k3s"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temp = directory + "/.k3s.yaml.standin"
        try server.writeKubeconfig(to: temp)
        chmod(temp, 0o600)
        guard rename(temp, directory + "/k3s.yaml") == 0 else { throw CocoaError(.fileWriteUnknown) }
    }

    /// `node-name:` of K3s's config.yaml, else the host name.
    static func nodeName() -> String {
        let config = (try? String(contentsOfFile: "/etc/rancher/k3s/config.yaml", encoding: .utf8)) ?? ""
        for line in config.split(separator: "\n") where line.hasPrefix("node-name:") {
            return line.dropFirst("node-name:".count).trimmingCharacters(in: CharacterSet(charactersIn: " \"'"))
        }
        return ProcessInfo.processInfo.hostName
    }
}
