// s3_sigv4.ts against the published AWS SigV4 test suite case "get-vanilla", and the encoding rules it depends on.
// (That the signature is accepted by a real gateway is shown by createBucket in s3_store_test.ts.)
import { expect, test } from "bun:test";
import { amzDate, sha256Hex, signRequest, uriEncode } from "../../src/backend/s3_sigv4.ts";

test("get-vanilla from the AWS SigV4 test suite", () => {
  const headers = signRequest({
    method: "GET",
    url: new URL("https://example.amazonaws.com/"),
    payloadSha256: sha256Hex(""),
    region: "us-east-1",
    service: "service",
    accessKeyId: "AKIDEXAMPLE",
    secretAccessKey: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    now: new Date("2015-08-30T12:36:00Z"),
  });
  expect(headers.authorization).toBe(
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, " +
      "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
  );
  expect(headers["x-amz-date"]).toBe("20150830T123600Z");
});

test("S3 requests sign x-amz-content-sha256 too", () => {
  const headers = signRequest({
    method: "PUT",
    url: new URL("http://127.0.0.1:7480/bucket"),
    payloadSha256: "UNSIGNED-PAYLOAD",
    region: "us-east-1",
    service: "s3",
    accessKeyId: "K",
    secretAccessKey: "S",
    now: new Date("2020-01-02T03:04:05.678Z"),
  });
  expect(headers["x-amz-content-sha256"]).toBe("UNSIGNED-PAYLOAD");
  expect(headers.authorization).toContain("SignedHeaders=host;x-amz-content-sha256;x-amz-date,");
  expect(headers.host).toBe("127.0.0.1:7480");
});

test("encoding: unreserved characters stay, the rest is %XX of UTF-8", () => {
  expect(uriEncode("a-b_c.d~e", false)).toBe("a-b_c.d~e");
  expect(uriEncode("a/b c", false)).toBe("a%2Fb%20c");
  expect(uriEncode("a/b c", true)).toBe("a/b%20c");
  expect(uriEncode("é", false)).toBe("%C3%A9");
  expect(amzDate(new Date("2020-01-02T03:04:05.678Z"))).toBe("20200102T030405Z");
});
