//! Seeded generator of realistic Exchange transport logs, for benchmarks and load tests.
//!
//! Output looks like what a 2016/2019 Exchange server writes: UTF-8 BOM, header block, CRLF,
//! files rolled at 10 MiB under per-server folders (`EX01/MessageTracking/MSGTRK...-1.LOG`,
//! `EX01/SmtpReceive/RECV...`, `EX01/SmtpSend/SEND...`). Content covers what the parser must
//! survive: quoted fields with commas and doubled quotes, IPv6 endpoints with zones, Unicode
//! subjects, long message-info latency strings, interleaved SMTP sessions with STARTTLS and
//! certificates, and about 2% failures (TLS NoCredentials, 454 4.7.0, 451 4.4.0 wrappers, 5.7.1
//! blocks, connect timeouts). The same seed gives the same bytes.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Which logs to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenKind {
    /// MSGTRK message tracking logs (Exchange 2016+ 30 columns).
    MessageTracking,
    /// SmtpReceive protocol logs.
    SmtpReceive,
    /// SmtpSend protocol logs.
    SmtpSend,
    /// All three, in equal parts.
    Mixed,
}

/// One generated file's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFile {
    /// Message tracking.
    MessageTracking,
    /// SmtpReceive protocol log.
    SmtpReceive,
    /// SmtpSend protocol log.
    SmtpSend,
}

impl GenKind {
    /// The file kinds this choice generates.
    pub fn parts(self) -> &'static [LogFile] {
        match self {
            GenKind::MessageTracking => &[LogFile::MessageTracking],
            GenKind::SmtpReceive => &[LogFile::SmtpReceive],
            GenKind::SmtpSend => &[LogFile::SmtpSend],
            GenKind::Mixed => &[
                LogFile::MessageTracking,
                LogFile::SmtpReceive,
                LogFile::SmtpSend,
            ],
        }
    }
}

/// Exchange's default maximum log file size.
pub const ROLL_BYTES: usize = 10 << 20;

const TRACKING_FIELDS: &str = "date-time,client-ip,client-hostname,server-ip,server-hostname,source-context,connector-id,source,event-id,internal-message-id,message-id,network-message-id,recipient-address,recipient-status,total-bytes,recipient-count,related-recipient-address,reference,message-subject,sender-address,return-path,message-info,directionality,tenant-id,original-client-ip,original-server-ip,custom-data,transport-traffic-type,log-id,schema-version";
const PROTOCOL_FIELDS: &str = "date-time,connector-id,session-id,sequence-number,local-endpoint,remote-endpoint,event,data,context";

const USERS: &[&str] = &[
    "alex.wilber",
    "megan.bowen",
    "lidia.holloway",
    "joni.sherman",
    "grady.archie",
    "isaiah.langer",
    "miriam.graham",
    "nestor.wilke",
    "patti.fernandez",
    "lynne.robbins",
    "diego.siciliani",
    "adele.vance",
    "björn.müller",
];
const DOMAINS: &[&str] = &[
    "contoso.com",
    "fabrikam.com",
    "adatum.com",
    "tailspintoys.com",
    "example.org",
    "müller-bau.de",
];
const SUBJECTS: &[&str] = &[
    "Quarterly report",
    "RE: Invoice 2024-0113 (urgent)!",
    "Meeting notes, action items and \"next steps\"",
    "Réunion d'équipe – ordre du jour",
    "Заказ #88231 подтверждён",
    "会議のお知らせ：来週の予定",
    "order #88231",
    "FW: Budget, forecast, and headcount",
    "Weekly status",
    "Ihre Bestellung bei Müller-Bau",
    "",
];

/// A generator; one per output stream.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    clock_ms: i64,
    server: String,
    next_session: u64,
    next_internal_id: i64,
}

impl Generator {
    /// A generator for logs of `server`, starting at 2024-01-25T00:00:00Z.
    pub fn new(seed: u64, server: &str) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            clock_ms: 1_706_140_800_000,
            server: server.to_string(),
            next_session: 0x08DC_1DB8_591B_0000 + seed.wrapping_mul(0x1_0000) % 0x10_0000_0000,
            next_internal_id: 70_912_345_566_403,
        }
    }

    /// One file's content of about `bytes` bytes (whole lines; header included).
    pub fn file(&mut self, kind: LogFile, bytes: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes + 4096);
        self.header(&mut out, kind);
        match kind {
            LogFile::MessageTracking => {
                while out.len() < bytes {
                    self.message(&mut out);
                }
            }
            LogFile::SmtpReceive => self.sessions(&mut out, false, bytes),
            LogFile::SmtpSend => self.sessions(&mut out, true, bytes),
        }
        out
    }

    fn header(&mut self, out: &mut Vec<u8>, kind: LogFile) {
        let (log_type, version, fields) = match kind {
            LogFile::MessageTracking => ("Message Tracking Log", "15.02.1258.012", TRACKING_FIELDS),
            LogFile::SmtpSend => ("SMTP Send Protocol Log", "15.0.0.0", PROTOCOL_FIELDS),
            LogFile::SmtpReceive => ("SMTP Receive Protocol Log", "15.0.0.0", PROTOCOL_FIELDS),
        };
        out.extend_from_slice(b"\xEF\xBB\xBF");
        let date = ts(self.clock_ms);
        write!(
            out,
            "#Software: Microsoft Exchange Server\r\n#Version: {version}\r\n#Log-type: {log_type}\r\n#Date: {date}\r\n#Fields: {fields}\r\n"
        )
        .unwrap_or_default();
    }

    fn tick(&mut self, max_ms: i64) -> String {
        self.clock_ms += self.rng.random_range(0..=max_ms);
        ts(self.clock_ms)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn address(&mut self) -> String {
        format!("{}@{}", self.pick(USERS), self.pick(DOMAINS))
    }

    fn ip(&mut self) -> String {
        match self.rng.random_range(0..20) {
            0 => format!(
                "2001:db8:{:x}::{:x}",
                self.rng.random_range(1..0xffffu32),
                self.rng.random_range(1..0xffffu32)
            ),
            1 => format!(
                "fe80::{:x}:{:x}%{}",
                self.rng.random_range(1..0xffffu32),
                self.rng.random_range(1..0xffffu32),
                self.rng.random_range(1..20)
            ),
            _ => format!(
                "{}.{}.{}.{}",
                self.rng.random_range(10..223),
                self.rng.random_range(0..255),
                self.rng.random_range(0..255),
                self.rng.random_range(1..254)
            ),
        }
    }

    fn guid(&mut self) -> String {
        let v: u128 = self.rng.random();
        let h = format!("{v:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    fn latency(&mut self) -> String {
        let mut r = |max: f64| self.rng.random_range(0.0..max);
        format!(
            "SRV={s}.contoso.com:TOTAL-FE={:.3}|SMR={:.3}(SMRDE={:.3}|SMRC={:.3})|SMS={:.3};SRV={s}.contoso.com:TOTAL-HUB={:.3}|SMR={:.3}(SMRDE={:.3}|SMRC={:.3}(SMRCL={:.3}|X-SMRCR={:.3}))|CAT={:.3}(CATOS={:.3}(CATSM={:.3}(CATSM-Malware Agent={:.3}))|CATRS={:.3}(CATRS-Index Routing Agent={:.3})|CATRT={:.3}(CATRT-Journal Agent={:.3}))|QDM={:.3}|SMSC={:.3}(X-SMSDR={:.3})|SMS={:.3}(SMSMBXD={:.3})",
            r(0.2),
            r(0.1),
            r(0.01),
            r(0.1),
            r(0.1),
            r(15.0),
            r(0.2),
            r(0.01),
            r(0.2),
            r(0.2),
            r(0.2),
            r(2.0),
            r(0.05),
            r(0.05),
            r(0.05),
            r(1.5),
            r(1.5),
            r(0.01),
            r(0.01),
            r(0.02),
            r(0.01),
            r(0.02),
            r(0.1),
            r(0.1),
            s = self.server
        )
    }

    /// The events of one message's journey through this server.
    fn message(&mut self, out: &mut Vec<u8>) {
        let id = format!(
            "<{}@{}.contoso.com>",
            self.guid().replace('-', ""),
            self.server.to_ascii_lowercase()
        );
        let network_id = self.guid();
        let internal = self.next_internal_id;
        self.next_internal_id += self.rng.random_range(1..5);
        let sender = self.address();
        let n_rcpt = [1, 1, 1, 1, 2, 3][self.rng.random_range(0..6)];
        let rcpts: Vec<String> = (0..n_rcpt).map(|_| self.address()).collect();
        let rcpt = rcpts.join(";");
        let subject = self.pick(SUBJECTS).to_string();
        let size = self.rng.random_range(2_000..5_000_000).to_string();
        let client = self.ip();
        let server_ip = "10.11.12.14".to_string();
        let session = format!("{:016X}", self.next_session);
        self.next_session += 1;
        let host = self.server.clone();
        let fe_connector = format!("{host}\\Default Frontend {host}");
        let t = self.tick(400);
        let ctx = format!("{session};{t};0");
        let info = ["04I: ", "0cA: ", ""][self.rng.random_range(0..3)];
        let cd = format!(
            "S:ProxyHop1={host}.contoso.com({server_ip});S:FirstForestHop={host}.contoso.com;S:FromEntity=Internet;S:ProxiedClientIPAddress={client};S:DeliveryPriority=Normal;S:AccountForest=contoso.com"
        );
        let n = rcpts.len().to_string();
        let row = Row {
            client_ip: &client,
            client_host: "mail.fabrikam.com",
            server_ip: &server_ip,
            server_host: &host,
            id: &id,
            network_id: &network_id,
            internal,
            rcpt: &rcpt,
            size: &size,
            rcpt_count: &n,
            subject: &subject,
            sender: &sender,
        };
        row.write(
            out,
            &t,
            &ctx,
            &fe_connector,
            "SMTP",
            "RECEIVE",
            "",
            info,
            "Incoming",
            &cd,
            self.guid(),
        );
        let t = self.tick(30);
        row.write(out, &t, "CatContentConversion", "", "AGENT", "AGENTINFO", "", "", "Incoming",
            "S:AMA=SUM|v=0|action=|error=|atch=0;S:AMA=EV|engine=M|v=0|sig=1.405.123.0|name=|file=;S:CompCost=|ETR=0;S:DeliveryPriority=Normal", self.guid());
        let t = self.tick(2_000);
        let roll = self.rng.random_range(0..1000);
        let latency = format!("{t};{}", self.latency());
        if roll < 8 {
            // One status per recipient, in recipient order, as Exchange writes them.
            let status = vec!["451 4.4.0 Primary target IP address responded with: \"421 4.4.1 Connection timed out.\" Attempted failover to alternate host, but that did not succeed. Either there are no alternate hosts, or delivery failed to all alternate hosts. The last endpoint attempted was 203.0.113.25:25"; rcpts.len()].join(";");
            row.write(
                out,
                &t,
                "",
                "Outbound to Internet",
                "SMTP",
                "DEFER",
                &status,
                &latency,
                "Originating",
                "S:DeliveryPriority=Normal;S:AccountForest=contoso.com",
                self.guid(),
            );
        } else if roll < 14 {
            let status = [
                "550 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using zen.spamhaus.org",
                "550 4.4.7 QUEUE.Expired;message expired",
                "552 5.3.4 Message size exceeds fixed maximum message size",
            ][self.rng.random_range(0..3)];
            let status = vec![status; rcpts.len()].join(";");
            row.write(
                out,
                &t,
                "",
                "Outbound to Internet",
                "SMTP",
                "FAIL",
                &status,
                &latency,
                "Originating",
                "S:DeliveryPriority=Normal;S:AccountForest=contoso.com",
                self.guid(),
            );
            let t = self.tick(50);
            row.write(
                out,
                &t,
                "",
                "",
                "DSN",
                "DSN",
                "",
                "",
                "Originating",
                "",
                self.guid(),
            );
        } else if roll < 300 {
            let ctx = format!(
                ";250 2.6.0 {id} [InternalId={internal}, Hostname=mx.{}] {size} bytes in 0.101, 1361.827 KB/sec Queued mail for delivery;ClientSubmitTime:",
                self.pick(DOMAINS)
            );
            let status = vec!["250 2.1.5 Recipient OK"; rcpts.len()].join(";");
            row.write(out, &t, &ctx, "Outbound to Internet", "SMTP", "SEND", &status, &latency, "Originating", "S:E2ELatency=1.928;S:ExternalSendLatency=0.101;S:IncludeInSla=True;S:Microsoft.Exchange.Transport.MailRecipient.RequiredTlsAuthLevel=Opportunistic", self.guid());
        } else {
            let mdb = self.guid();
            row.write(out, &t, &format!("MDB:{mdb}, Mailbox:{}, Event:{}, MessageClass:IPM.Note, CreationTime:{t}, ClientType:System", self.guid(), self.rng.random_range(1_000_000..300_000_000)), "", "STOREDRIVER", "DELIVER", "", &latency, "Incoming", &format!("S:MailboxDatabaseGuid={mdb};S:E2ELatency=1.204;S:Mailboxes={}", self.guid()), self.guid());
        }
    }

    fn sessions(&mut self, out: &mut Vec<u8>, send: bool, bytes: usize) {
        let mut active: Vec<Session> = Vec::new();
        while out.len() < bytes || !active.is_empty() {
            if active.len() < 4 && out.len() < bytes {
                let id = format!("{:016X}", self.next_session);
                self.next_session += 1;
                let failure = match self.rng.random_range(0..100) {
                    0 => Failure::Tls,
                    1 => Failure::Temp,
                    _ => Failure::None,
                };
                let remote = self.ip();
                let script = if send {
                    self.send_script(failure)
                } else {
                    self.receive_script(failure)
                };
                active.push(Session {
                    id,
                    seq: 0,
                    remote,
                    lines: script,
                    next: 0,
                });
            }
            let i = self.rng.random_range(0..active.len());
            let t = self.tick(40);
            let s = &mut active[i];
            let (event, data, context) = &s.lines[s.next];
            let connector = if send {
                "Outbound to Internet".to_string()
            } else {
                format!("{}\\Default Frontend {}", self.server, self.server)
            };
            let local = if send && s.next < 2 {
                String::new()
            } else {
                format!("10.11.12.14:{}", if send { 41822 + s.seq } else { 25 })
            };
            let port = if send {
                25
            } else {
                50_000 + (s.seq * 7) % 9_000
            };
            let remote = format!("{}:{port}", s.remote);
            let mut line = Vec::with_capacity(256);
            for f in [
                t.as_str(),
                &connector,
                &s.id,
                &s.seq.to_string(),
                &local,
                &remote,
                event,
                data,
                context,
            ] {
                field(&mut line, f);
            }
            line.pop();
            line.extend_from_slice(b"\r\n");
            out.extend_from_slice(&line);
            s.seq += 1;
            s.next += 1;
            if s.next == s.lines.len() {
                active.swap_remove(i);
            }
        }
    }

    fn cert_lines(&mut self, lines: &mut Vec<Line>) {
        let thumb: u128 = self.rng.random();
        let serial: u64 = self.rng.random();
        let host = self.server.clone();
        lines.push(ln("*", "", "Sending certificate"));
        lines.push(ln(
            "*",
            "CN=mail.contoso.com, OU=IT, O=Contoso Ltd, L=Redmond, S=WA, C=US",
            "Certificate subject",
        ));
        lines.push(ln(
            "*",
            "CN=Contoso Issuing CA 01, O=Contoso Ltd, C=US",
            "Certificate issuer name",
        ));
        lines.push(ln(
            "*",
            format!("{serial:016X}"),
            "Certificate serial number",
        ));
        lines.push(ln("*", format!("{:040X}", thumb), "Certificate thumbprint"));
        lines.push(ln(
            "*",
            format!(
                "mail.contoso.com;autodiscover.contoso.com;{}.contoso.com",
                host.to_ascii_lowercase()
            ),
            "Certificate alternate names",
        ));
    }

    fn send_script(&mut self, failure: Failure) -> Vec<Line> {
        let ehlo = format!("EHLO {}.contoso.com", self.server.to_ascii_lowercase());
        let mut l: Vec<Line> = vec![
            ln(
                "*",
                "SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAuthenticationFlag SMTPAcceptAnySender",
                "Set Session Permissions",
            ),
            ln("*", "", "attempting to connect"),
            ln("+", "", ""),
            ln(
                "<",
                format!(
                    "220 mx.{} Microsoft ESMTP MAIL Service ready at Thu, 25 Jan 2024 16:14:38 +0100",
                    self.pick(DOMAINS)
                ),
                "",
            ),
            ln(">", ehlo.as_str(), ""),
            ln(
                "<",
                "250-mx.fabrikam.com Hello [10.11.12.14] 250-SIZE 37748736 250-PIPELINING 250-STARTTLS 250 CHUNKING",
                "",
            ),
            ln(">", "STARTTLS", ""),
            ln("<", "220 2.0.0 SMTP server ready", ""),
        ];
        self.cert_lines(&mut l);
        if failure == Failure::Tls {
            l.push(ln(
                "*",
                "",
                "TLS negotiation failed with error NoCredentials",
            ));
            l.push(ln("-", "", "Local"));
            return l;
        }
        l.push(ln("*", "", "TLS protocol SP_PROT_TLS1_2_CLIENT negotiation succeeded using bulk encryption algorithm CALG_AES_256 with strength 256 bits, MAC hash algorithm CALG_SHA_384 with strength 0 bits and key exchange algorithm CALG_ECDH_EPHEM with strength 384 bits"));
        l.push(ln(">", ehlo, ""));
        l.push(ln(
            "<",
            "250-mx.fabrikam.com Hello [10.11.12.14] 250-SIZE 37748736 250 CHUNKING",
            "",
        ));
        let rid = self.rng.random_range(1_000_000..9_000_000u64);
        let mid = format!("<{}@contoso.com>", self.guid());
        l.push(ln(
            "*",
            "",
            format!("sending message with RecordId {rid} and InternetMessageId {mid}"),
        ));
        l.push(ln(
            ">",
            format!("MAIL FROM:<{}> SIZE=48211", self.address()),
            "",
        ));
        l.push(ln(">", format!("RCPT TO:<{}>", self.address()), ""));
        if failure == Failure::Temp {
            l.push(ln("<", "451 4.7.1 Greylisted, please try again later", ""));
        } else {
            l.push(ln("<", "250 2.1.0 Sender OK", ""));
            l.push(ln("<", "250 2.1.5 Recipient OK", ""));
            l.push(ln(">", "BDAT 48211 LAST", ""));
            l.push(ln("<", format!("250 2.6.0 {mid} [InternalId=1322849927, Hostname=mx.fabrikam.com] 52349 bytes in 0.204, 250.486 KB/sec Queued mail for delivery"), ""));
        }
        l.push(ln(">", "QUIT", ""));
        l.push(ln(
            "<",
            "221 2.0.0 Service closing transmission channel",
            "",
        ));
        l.push(ln("-", "", "Local"));
        l
    }

    fn receive_script(&mut self, failure: Failure) -> Vec<Line> {
        let host = self.server.clone();
        let mut l: Vec<Line> = vec![
            ln("+", "", ""),
            ln(
                "*",
                "SMTPSubmit SMTPAcceptAnyRecipient SMTPAcceptAuthenticationFlag SMTPAcceptAnySender SMTPAcceptAuthoritativeDomainSender BypassAntiSpam",
                "Set Session Permissions",
            ),
            ln(
                ">",
                format!(
                    "220 {host}.contoso.com Microsoft ESMTP MAIL Service ready at Thu, 25 Jan 2024 16:14:38 +0100"
                ),
                "",
            ),
            ln("<", format!("EHLO mail.{}", self.pick(DOMAINS)), ""),
            ln(
                ">",
                format!(
                    "250  {host}.contoso.com Hello [203.0.113.7] SIZE 37748736 PIPELINING DSN ENHANCEDSTATUSCODES STARTTLS X-ANONYMOUSTLS AUTH NTLM LOGIN X-EXPS GSSAPI NTLM 8BITMIME BINARYMIME CHUNKING XRDST"
                ),
                "",
            ),
            ln("<", "STARTTLS", ""),
            ln(">", "220 2.0.0 SMTP server ready", ""),
            ln(
                "*",
                format!(
                    " CN={host} CN={host} 12DEABC6565646512346ABDC13456894 12DEABC6565646512346ABDC1345689413589876 2020-01-17T15:15:33.000Z 2025-01-17T15:15:33.000Z {host};{host}.contoso.com"
                ),
                "Sending certificate Subject Issuer name Serial number Thumbprint Not before Not after Subject alternate names",
            ),
            ln(
                "*",
                "",
                "TLS protocol SP_PROT_TLS1_2_SERVER negotiation succeeded using bulk encryption algorithm CALG_AES_256 with strength 256 bits, MAC hash algorithm CALG_SHA_384 with strength 0 bits and key exchange algorithm CALG_ECDH_EPHEM with strength 384 bits",
            ),
            ln("<", format!("EHLO mail.{}", self.pick(DOMAINS)), ""),
            ln(
                ">",
                format!(
                    "250  {host}.contoso.com Hello [203.0.113.7] SIZE 37748736 PIPELINING DSN ENHANCEDSTATUSCODES AUTH NTLM LOGIN 8BITMIME BINARYMIME CHUNKING XRDST"
                ),
                "",
            ),
        ];
        if failure != Failure::None {
            l.push(ln("<", "AUTH LOGIN", ""));
            l.push(ln(">", "334 <authentication response>", ""));
            l.push(ln(
                "*",
                "",
                "Inbound AUTH LOGIN failed because of LogonDenied",
            ));
            l.push(ln(">", "454 4.7.0 Temporary authentication failure", ""));
            l.push(ln("-", "", "Remote"));
            return l;
        }
        let session_ctx = format!("{:016X};{};1", self.next_session, ts(self.clock_ms));
        let mid = format!("<{}@{}>", self.guid(), self.pick(DOMAINS));
        l.push(ln(
            "<",
            format!("MAIL FROM:<{}> SIZE=3454", self.address()),
            "",
        ));
        l.push(ln(">", "250 2.1.0 Sender OK", ""));
        l.push(ln("<", format!("RCPT TO:<{}>", self.address()), ""));
        l.push(ln(">", "250 2.1.5 Recipient OK", ""));
        l.push(ln("<", "BDAT 3454 LAST", ""));
        l.push(ln("*", session_ctx, "receiving message"));
        l.push(ln(
            "*",
            "",
            format!("receiving message with InternetMessageId {mid}"),
        ));
        l.push(ln(">", format!("250 2.6.0 {mid} [InternalId=1322849927, Hostname={host}.contoso.com] 3454 bytes in 0.777, 4.338 KB/sec Queued mail for delivery"), ""));
        l.push(ln("<", "QUIT", ""));
        l.push(ln(">", "221 2.0.0 Closing connection.", ""));
        l.push(ln("-", "", "Local"));
        l
    }
}

/// One protocol-log line of a scripted session: event symbol, data, context.
type Line = (String, String, String);

fn ln(event: &str, data: impl Into<String>, context: impl Into<String>) -> Line {
    (event.to_string(), data.into(), context.into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    None,
    Tls,
    Temp,
}

#[derive(Debug)]
struct Session {
    id: String,
    seq: u32,
    remote: String,
    lines: Vec<Line>,
    next: usize,
}

struct Row<'a> {
    client_ip: &'a str,
    client_host: &'a str,
    server_ip: &'a str,
    server_host: &'a str,
    id: &'a str,
    network_id: &'a str,
    internal: i64,
    rcpt: &'a str,
    size: &'a str,
    rcpt_count: &'a str,
    subject: &'a str,
    sender: &'a str,
}

impl Row<'_> {
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        out: &mut Vec<u8>,
        t: &str,
        source_context: &str,
        connector: &str,
        source: &str,
        event: &str,
        status: &str,
        info: &str,
        directionality: &str,
        custom: &str,
        log_id: String,
    ) {
        let internal = self.internal.to_string();
        for f in [
            t,
            self.client_ip,
            self.client_host,
            self.server_ip,
            self.server_host,
            source_context,
            connector,
            source,
            event,
            &internal,
            self.id,
            self.network_id,
            self.rcpt,
            status,
            self.size,
            self.rcpt_count,
            "",
            "",
            self.subject,
            self.sender,
            self.sender,
            info,
            directionality,
            "",
            self.client_ip,
            self.server_ip,
            custom,
            "Email",
            &log_id,
            "15.02.1258.012",
        ] {
            field(out, f);
        }
        out.pop();
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `f` and a comma, quoted as Exchange quotes (only when it holds a comma or quote).
fn field(out: &mut Vec<u8>, f: &str) {
    if f.contains([',', '"']) {
        out.push(b'"');
        out.extend_from_slice(f.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(f.as_bytes());
    }
    out.push(b',');
}

fn ts(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let date = mailflow_parser::fields::datetime::format_date(ms);
    let rem = secs - days * 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// Writes about `bytes` of logs of `kind` under `out`, as per-server Exchange log folders, in
/// files rolled at [`ROLL_BYTES`]. Returns the files written.
pub fn generate_dir(
    kind: GenKind,
    bytes: u64,
    seed: u64,
    servers: usize,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let kinds = kind.parts();
    let servers = servers.max(1);
    let per_stream = (bytes / (kinds.len() * servers) as u64).max(1);
    let mut written = Vec::new();
    for s in 0..servers {
        let server = format!("EX{:02}", s + 1);
        for (k, &kind) in kinds.iter().enumerate() {
            let mut generator = Generator::new(seed.wrapping_add((s * 16 + k) as u64), &server);
            let (folder, prefix) = match kind {
                LogFile::MessageTracking => ("MessageTracking", "MSGTRK"),
                LogFile::SmtpReceive => ("SmtpReceive", "RECV"),
                LogFile::SmtpSend => ("SmtpSend", "SEND"),
            };
            let dir = out.join(&server).join(folder);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut left = per_stream;
            let mut n = 1;
            while left > 0 {
                let size = left.min(ROLL_BYTES as u64) as usize;
                let content = generator.file(kind, size);
                let hour = ts(generator.clock_ms).replace(['-', 'T', ':'], "");
                let path = dir.join(format!("{prefix}{}-{n}.LOG", &hour[..10]));
                fs::write(&path, &content)
                    .with_context(|| format!("writing {}", path.display()))?;
                left = left.saturating_sub(content.len() as u64);
                written.push(path);
                n += 1;
            }
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let a = Generator::new(7, "EX01").file(LogFile::MessageTracking, 20_000);
        let b = Generator::new(7, "EX01").file(LogFile::MessageTracking, 20_000);
        let c = Generator::new(8, "EX01").file(LogFile::MessageTracking, 20_000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with(b"\xEF\xBB\xBF#Software"));
    }

    #[test]
    fn timestamps_format_like_exchange() {
        assert_eq!(ts(1_706_195_769_843), "2024-01-25T15:16:09.843Z");
    }
}
