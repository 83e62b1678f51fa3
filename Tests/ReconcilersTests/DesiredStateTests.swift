import Testing
import TestSupport
import Reconcilers
import YAML

@Suite("Desired state: the corpus")
struct DesiredStateCorpusTests {
    @Test func corpusIsLargeEnough() {
        #expect(Fixtures.invalid.count >= 30)
        #expect(Fixtures.valid.count >= 5)
    }

    @Test(arguments: Fixtures.invalid)
    func invalidFileIsRefusedAtTheExactSpot(_ e: Fixtures.Expectation) throws {
        let path = Fixtures.desiredState + "/invalid/" + e.file
        do {
            let platform = try DesiredStateLoader.load(path: path)
            Issue.record("\(e.file) was accepted: \(platform.name)")
        } catch {
            let first = try #require(error.diagnostics.first)
            #expect(first.file == path)
            #expect(first.mark == Mark(line: e.line, column: e.column), "\(e.file): \(first)")
            #expect(first.code.rawValue == e.code, "\(e.file): \(first)")
            #expect(first.path.description == e.path, "\(e.file): \(first)")
            #expect(first.message.contains(e.message), "\(e.file): \(first)")
        }
    }

    @Test(arguments: Fixtures.valid)
    func validFileLoads(_ path: String) throws {
        _ = try DesiredStateLoader.load(path: path)
    }

    @Test func everyErrorOfAFileIsReportedInFileOrder() {
        let text = """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              wireguard:
                address: 10.8.0.1/33
                listenPort: 0
              k3s:
                version: v1.31
                sha256: xyz
              bogus: 1
            """
        do {
            _ = try DesiredStateLoader.load(Array(text.utf8), file: "p.yaml")
            Issue.record("accepted")
        } catch {
            #expect(error.diagnostics.map { "\($0.mark) \($0.path)" } == [
                "6:14 spec.wireguard.address", "9:14 spec.k3s.version", "11:3 spec.bogus",
            ])
        }
    }
}

@Suite("Desired state: the model")
struct DesiredStateModelTests {
    @Test func exampleDecodesWithDefaults() throws {
        let p = try DesiredStateLoader.load(path: Fixtures.example)
        #expect(p.name.value == "vps-1")
        #expect(p.declaredSections == ["os", "firewall", "wireguard", "k3s", "helmReleases", "argocd", "alerting", "backups", "status"])
        let wg = try #require(p.spec.wireguard)
        #expect(wg.peers.map(\.name.value) == ["laptop", "phone"])
        #expect(wg.peers[1].persistentKeepalive == 25)
        #expect(wg.listenPort.value == 51820)
        #expect(wg.address.description == "10.8.0.1/24")
        #expect(p.spec.firewall?.vpnOnly.tcp.map(\.value) == [6443, 9430, 5432])
        let k3s = try #require(p.spec.k3s)
        #expect(k3s.version.description == "v1.35.6+k3s1")
        #expect(k3s.clusterCIDR.description == "10.42.0.0/16")
        #expect(k3s.readyTimeout == TimeSpan(milliseconds: 300_000))
        let releases = try #require(p.spec.helmReleases)
        #expect(releases.map(\.name.value) == ["argocd", "monitoring", "cnpg", "postgres"])
        #expect(releases[3].values["fullnameOverride"]?.string == "pg")
        #expect(releases[3].dependsOn.map(\.value) == ["cnpg"])
        #expect(releases[1].valuesSecrets.first?.file.value == "/etc/nodeagent/secrets/grafana-admin-password")
        #expect(p.spec.alerting?.email?.to.map(\.value) == ["ops@example.com"])
        let pg = try #require(p.spec.backups?.postgres)
        #expect(pg.schedule.hours == [3] && pg.schedule.minutes == [0])
        #expect(pg.restoreDrill?.schedule.daysOfWeek == [0])
        #expect(p.spec.os?.sysctl.map(\.key) == ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"])
    }

    @Test func omittedFirewallListsTakeTheDocumentedDefaults() throws {
        let text = "apiVersion: nodeagent/v1\nkind: Platform\nmetadata: {name: a}\nspec:\n  firewall: {publicInterface: eth0}\n"
        let p = try DesiredStateLoader.load(Array(text.utf8), file: "d.yaml")
        #expect(p.spec.firewall?.public.tcp.map(\.value) == [22, 80, 443])
        #expect(p.spec.firewall?.public.udp.map(\.value) == [51820])
        #expect(p.spec.firewall?.vpnOnly.tcp == [])
    }

    @Test(arguments: [
        ("10.8.0.0/24", "10.8.0.128/25", true),
        ("10.8.0.0/25", "10.8.0.128/25", false),
        ("fd00::/64", "fd00::1/128", true),
        ("fd00::/64", "10.8.0.0/24", false),
        ("0.0.0.0/0", "192.0.2.1/32", true),
    ])
    func networksOverlap(a: String, b: String, overlap: Bool) throws {
        #expect(try IPNetwork(parsing: a).overlaps(try IPNetwork(parsing: b)) == overlap)
    }

    @Test func k3sVersionsOrder() throws {
        let versions = try ["v1.31.4+k3s1", "v1.31.4+k3s2", "v1.32.0-rc1+k3s1", "v1.32.0+k3s1", "v1.30.10+k3s1"].map(K3sVersion.init(parsing:))
        #expect(versions.sorted().map(\.description) == ["v1.30.10+k3s1", "v1.31.4+k3s1", "v1.31.4+k3s2", "v1.32.0-rc1+k3s1", "v1.32.0+k3s1"])
    }

    @Test(arguments: [("90s", 90_000), ("5m", 300_000), ("1h30m", 5_400_000), ("250ms", 250), ("1d", 86_400_000)] as [(String, Int64)])
    func durationsParse(text: String, ms: Int64) throws {
        #expect(try TimeSpan(parsing: text).milliseconds == ms)
    }

    @Test(arguments: ["5", "m", "5 m", "-5s", "1.5h", ""])
    func badDurationsAreRefused(text: String) {
        #expect(throws: InvalidValue.self) { try TimeSpan(parsing: text) }
    }

    @Test func cronFieldsExpand() throws {
        let c = try CronSchedule(parsing: "*/15 1-5/2 * jan,JUL mon-fri")
        #expect(c.minutes == [0, 15, 30, 45])
        #expect(c.hours == [1, 3, 5])
        #expect(c.months == [1, 7])
        #expect(c.daysOfWeek == [1, 2, 3, 4, 5])
        #expect(c.anyDayOfMonth && !c.anyDayOfWeek)
        #expect(try CronSchedule(parsing: "0 0 * * 7").daysOfWeek == [0])
        #expect(try CronSchedule(parsing: "0 0 29 2 *").daysOfMonth == [29])
    }

    @Test(arguments: ["* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "5-1 * * * *", "*/0 * * * *", "0 0 30 2 *"])
    func badCronIsRefused(text: String) {
        #expect(throws: InvalidValue.self) { try CronSchedule(parsing: text) }
    }
}

@Suite("Cron schedules: next and previous firing, catch-up after downtime")
struct CronScheduleTests {
    func t(_ s: String) -> Timestamp { Timestamp(rfc3339: s)! }
    func cron(_ s: String) -> CronSchedule { try! CronSchedule(parsing: s) }

    @Test func nextAndPrevious() {
        #expect(cron("0 3 * * *").next(after: t("2026-11-26T21:00:00Z")) == t("2026-11-27T03:00:00Z"))
        #expect(cron("0 3 * * *").next(after: t("2026-11-27T03:00:00Z")) == t("2026-11-28T03:00:00Z"), "strictly after")
        #expect(cron("0 3 * * *").previous(atOrBefore: t("2026-11-27T03:00:00Z")) == t("2026-11-27T03:00:00Z"))
        #expect(cron("0 4 * * 0").next(after: t("2026-11-26T21:00:00Z")) == t("2026-11-29T04:00:00Z"), "Sunday")
        #expect(cron("*/15 * * * *").next(after: t("2026-11-26T21:07:30Z")) == t("2026-11-26T21:15:00Z"))
        #expect(cron("0 0 29 2 *").next(after: t("2026-03-01T00:00:00Z")) == t("2028-02-29T00:00:00Z"), "leap day")
        #expect(cron("30 12 1 * mon").next(after: t("2026-11-26T00:00:00Z")) == t("2026-11-30T12:30:00Z"), "either day matches")
        #expect(cron("0 0 31 dec *").previous(atOrBefore: t("2026-06-01T00:00:00Z")) == t("2025-12-31T00:00:00Z"))
        // A stepped day field ("*/2") is not "any day": both fields must match, as in Vixie cron.
        #expect(cron("0 3 */2 * mon").next(after: t("2026-11-26T00:00:00Z")) == t("2026-12-07T03:00:00Z"), "a Monday on an odd date")
        #expect(cron("0 3 1-7 * */2").next(after: t("2026-11-26T00:00:00Z")) == t("2026-12-01T03:00:00Z"), "Tuesday 1 December: weekday 2")
        #expect(cron("0 3 1-7 * */2").next(after: t("2026-12-01T03:00:00Z")) == t("2026-12-03T03:00:00Z"), "not Wednesday the 2nd")
    }

    @Test func aRunMissedWhileDownIsCaughtUpOnce() {
        let daily = cron("0 3 * * *")
        #expect(BackupSchedule.isDue(daily, lastRun: nil, now: t("2026-11-26T10:00:00Z")), "never ran: now")
        #expect(!BackupSchedule.isDue(daily, lastRun: t("2026-11-26T03:00:00Z"), now: t("2026-11-26T10:00:00Z")))
        // Down from before Tuesday's 03:00 until Thursday: one catch-up run, not two.
        #expect(BackupSchedule.isDue(daily, lastRun: t("2026-11-24T03:00:05Z"), now: t("2026-11-26T10:00:00Z")))
        #expect(!BackupSchedule.isDue(daily, lastRun: t("2026-11-26T10:00:01Z"), now: t("2026-11-26T10:05:00Z")))
        #expect(BackupSchedule.isDue(daily, lastRun: t("2027-01-01T00:00:00Z"), now: t("2026-11-26T10:05:00Z")), "a run stamped in the future is stale")
        #expect(BackupSchedule.wake([daily, cron("0 4 * * 0")], now: t("2026-11-26T10:00:00Z"), cap: TimeSpan(milliseconds: 60_000))
                == t("2026-11-26T10:01:00Z"))
        #expect(BackupSchedule.wake([cron("*/15 * * * *")], now: t("2026-11-26T10:14:30Z"), cap: TimeSpan(milliseconds: 3_600_000))
                == t("2026-11-26T10:15:00Z"))
    }
}

@Suite("Alerting email: the password needs a login")
struct AlertingEmailValidationTests {
    @Test func aPasswordFileWithoutAUsernameIsRefused() {
        let text = """
            apiVersion: nodeagent/v1
            kind: Platform
            metadata: {name: vps-1}
            spec:
              helmReleases: [{name: monitoring, chart: kube-prometheus-stack, repo: https://x.example.com, version: 1.0.0, namespace: monitoring}]
              alerting:
                email: {to: ops@example.com, from: a@example.com, smarthost: "smtp.example.com:587", passwordFile: /etc/nodeagent/secrets/smtp}
            """
        do {
            _ = try DesiredStateLoader.load(Array(text.utf8), file: "p.yaml")
            Issue.record("accepted a password without a username")
        } catch {
            let d = error.diagnostics.first
            #expect(d?.description.contains("p.yaml:7:") == true, "\(String(describing: d))")
            #expect(d?.description.contains("spec.alerting.email: \"passwordFile\" is set, so \"username\" is needed too") == true, "\(String(describing: d))")
        }
    }
}
