#include "server/http/http_server.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/metrics/metrics.h"
#include "tests/support/test_util.h"

namespace loracle::http {
namespace {

int Connect(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Sends `request` on a new connection and reads until the server closes it (or `timeout`).
std::string Exchange(int port, const std::string& request,
                     absl::Duration timeout = absl::Seconds(10)) {
  const int fd = Connect(port);
  if (fd < 0) return "";
  ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[4096];
  const absl::Time end = absl::Now() + timeout;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    const int64_t left = absl::ToInt64Milliseconds(end - absl::Now());
    if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) break;
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

std::unique_ptr<HttpServer> Serve(HttpServer::Options o) {
  o.bind_address = "127.0.0.1:0";
  auto s = HttpServer::Create(o, {{"GET", "/hello/([a-z]+)",
                                   [](const Request& r) {
                                     Response resp;
                                     resp.body = absl::StrCat("hello ", r.matches[0], " from ",
                                                              r.Header("x-who"));
                                     return resp;
                                   }},
                                  {"POST", "/echo", [](const Request& r) {
                                     Response resp;
                                     resp.status = 201;
                                     resp.content_type = "application/json";
                                     resp.body = r.body;
                                     return resp;
                                   }}});
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *std::move(s) : nullptr;
}

TEST(HttpServerTest, RoutesByPathThenMethod) {
  auto server = Serve({});
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  std::string r = Exchange(
      port, "GET /hello/world HTTP/1.1\r\nHost: x\r\nX-Who: test\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 200")) << r;
  EXPECT_TRUE(absl::EndsWith(r, "hello world from test")) << r;
  r = Exchange(port,
               "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nConnection: close\r\n\r\n"
               "{\"a\":1}");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 201")) << r;
  EXPECT_TRUE(absl::StrContains(r, "Content-Type: application/json")) << r;
  EXPECT_TRUE(absl::EndsWith(r, "{\"a\":1}")) << r;
  r = Exchange(port, "GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 404")) << r;
  r = Exchange(port, "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 405")) << r;
  EXPECT_TRUE(absl::StrContains(r, "Allow: POST")) << r;
}

TEST(HttpServerTest, ABodyOverTheLimitIsRefusedUnread) {
  HttpServer::Options o;
  o.max_body_bytes = 1024;
  auto server = Serve(o);
  ASSERT_NE(server, nullptr);
  const std::string body(4096, 'x');
  const std::string r =
      Exchange(server->port(), absl::StrCat("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ",
                                            body.size(), "\r\nConnection: close\r\n\r\n", body));
  EXPECT_TRUE(absl::StartsWith(r, "HTTP/1.1 413")) << r;
}

TEST(HttpServerTest, BadOptionsAndAddresses) {
  HttpServer::Options o;
  o.bind_address = "127.0.0.1:0";
  o.threads = 0;
  EXPECT_EQ(HttpServer::Create(o, {}).status().code(), absl::StatusCode::kInvalidArgument);
  o.threads = 1;
  o.bind_address = "127.0.0.1:99999";
  EXPECT_EQ(HttpServer::Create(o, {}).status().code(), absl::StatusCode::kInvalidArgument);
  o.bind_address = "127.0.0.1:0";
  EXPECT_EQ(HttpServer::Create(o, {{"GET", "([", {}}}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto first = HttpServer::Create(o, {});
  ASSERT_TRUE(first.ok());
  o.bind_address = absl::StrCat("127.0.0.1:", (*first)->port());
  EXPECT_EQ(HttpServer::Create(o, {}).status().code(), absl::StatusCode::kUnavailable);
}

// The /metrics endpoint a loracle-server runs: a client that sends half a request and waits holds
// one of its workers until its read timeout (2 s); scrapes meanwhile are answered at once, and
// even with every worker held by a stalled client, a scrape waits at most that timeout.
TEST(MetricsEndpointTest, AStalledClientDoesNotDelayAnotherScrape) {
  metrics::Metrics::Options mo;
  mo.bind_address = "127.0.0.1:0";
  auto m = metrics::Metrics::Create(mo);
  ASSERT_TRUE(m.ok()) << m.status();
  const int port = (*m)->port();
  const std::string half = "GET /metrics HTTP/1.1\r\nHost: x\r\n";  // no blank line: stalls
  const int stalled = Connect(port);
  ASSERT_GE(stalled, 0);
  ::send(stalled, half.data(), half.size(), MSG_NOSIGNAL);
  absl::SleepFor(absl::Milliseconds(100));  // the stalled connection has its worker

  absl::Time start = absl::Now();
  std::string scrape = testing::HttpGet(port, "/metrics");
  const absl::Duration one_stalled = absl::Now() - start;
  EXPECT_TRUE(absl::StartsWith(scrape, "HTTP/1.1 200")) << scrape;
  EXPECT_TRUE(absl::StrContains(scrape, "loracle_build_info")) << scrape;
  EXPECT_LT(one_stalled, absl::Milliseconds(1000)) << "answered by the other worker";

  // Both workers stalled: a scrape waits for the first read timeout, no longer.
  const int stalled2 = Connect(port);
  ASSERT_GE(stalled2, 0);
  ::send(stalled2, half.data(), half.size(), MSG_NOSIGNAL);
  absl::SleepFor(absl::Milliseconds(100));
  start = absl::Now();
  scrape = testing::HttpGet(port, "/metrics");
  const absl::Duration all_stalled = absl::Now() - start;
  EXPECT_TRUE(absl::StartsWith(scrape, "HTTP/1.1 200")) << scrape;
  EXPECT_LT(all_stalled, absl::Milliseconds(3500)) << "the 2 s read timeout frees a worker";

  // The server dropped the stalled connections (EOF, or a 4xx then EOF).
  for (int fd : {stalled, stalled2}) {
    pollfd p{fd, POLLIN, 0};
    ASSERT_GT(::poll(&p, 1, 5000), 0);
    char buf[256];
    ssize_t n;
    while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) {
    }
    EXPECT_EQ(n, 0) << "closed by the server";
    ::close(fd);
  }
  std::printf("scrape with one stalled client: %.1f ms; with both workers stalled: %.1f ms\n",
              absl::ToDoubleMilliseconds(one_stalled), absl::ToDoubleMilliseconds(all_stalled));
}

}  // namespace
}  // namespace loracle::http
