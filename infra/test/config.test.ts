// The context parameters: defaults, parsing, and the checks that stop a bad value at synth
// instead of half-way through a deployment.
import { DEFAULTS, readConfig } from '../lib/config';

const CERT = 'arn:aws:acm:us-east-1:123456789012:certificate/x';
const read = (context: Record<string, string>, env: NodeJS.ProcessEnv = {}) =>
  readConfig((key) => ({ certificateArn: CERT, ...context })[key], env);

test('defaults: the spec sizes and a production layout', () => {
  const cfg = read({});
  expect(cfg).toMatchObject({
    name: 'tributary',
    region: 'us-east-1',
    brokerCount: 3,
    brokerInstanceType: 'kafka.m5.large',
    natGateways: 3,
    processorInstances: 3,
    gatewayCount: 2,
    logRetentionDays: 30,
    ingressCidrs: ['0.0.0.0/0'],
    deletionProtection: true,
    gatewayJwt: 'hmac',
  });
  expect(cfg.availabilityZones).toBeUndefined();
  expect(cfg.jwtIssuer).toBeUndefined();
});

test('every default parses: DEFAULTS and readConfig agree', () => {
  const cfg = read({}) as unknown as Record<string, unknown>;
  for (const [key, text] of Object.entries(DEFAULTS)) {
    const value = cfg[key];
    const shown = Array.isArray(value) ? value.join(',') : String(value);
    expect(`${key}=${shown}`).toBe(`${key}=${text}`);
  }
});

test('numbers arrive as text from -c and are parsed', () => {
  expect(read({ brokerCount: '6', gatewayMaxCount: '12' })).toMatchObject({ brokerCount: 6, gatewayMaxCount: 12 });
});

test('account and region fall back to the CLI environment', () => {
  const cfg = read({ region: '' }, { CDK_DEFAULT_ACCOUNT: '111122223333', CDK_DEFAULT_REGION: 'eu-central-1' });
  expect(cfg.account).toBe('111122223333');
  expect(cfg.region).toBe('eu-central-1');
  expect(read({ region: 'ap-southeast-2' }, { CDK_DEFAULT_REGION: 'eu-central-1' }).region).toBe('ap-southeast-2');
});

test.each([
  [{ certificateArn: '' }, /certificateArn is required/],
  [{ jwksEndpoint: 'https://idp.example.com/jwks' }, /jwksEndpoint needs jwtIssuer/],
  [{ jwksEndpoint: 'https://idp.example.com/jwks', jwtIssuer: 'https://idp.example.com/' }, /would fail the gateway's HMAC check/],
  [{ gatewayJwt: 'public-key' }, /jwtPublicKey goes with gatewayJwt=public-key/],
  [{ jwtPublicKey: '-----BEGIN PUBLIC KEY-----' }, /jwtPublicKey goes with gatewayJwt=public-key/],
  [{ gatewayJwt: 'public-key', jwtPublicKey: '-----BEGIN PUBLIC KEY-----', jwtIssuer: 'https://idp.example.com/' }, /needs jwtIssuer and jwtAudience/],
  [{ gatewayJwt: 'basic' }, /gatewayJwt must be hmac, public-key or off/],
  [{ gatewayCpu: '1024', gatewayMemoryMiB: '512' }, /not a Fargate size/],
  [{ brokerCount: '4' }, /multiple of 3/],
  [{ processorInstances: 'two' }, /processorInstances must be an integer/],
  [{ processorInstances: '0' }, /processorInstances must be an integer from 1/],
  [{ logRetentionDays: '42' }, /logRetentionDays must be one of/],
  [{ availabilityZones: 'us-east-1a,us-east-1b' }, /must name 3 zones/],
  [{ connectHeapMiB: '4000' }, /connectHeapMiB must leave/],
  [{ archiveGlacierDays: '400', archiveExpireDays: '365' }, /archiveExpireDays must be after/],
  [{ name: 'Tributary_Prod' }, /context name must be/],
])('refuses %j', (context, message) => {
  expect(() => read(context as Record<string, string>)).toThrow(message);
});
