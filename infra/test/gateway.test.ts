// The public entrance: HTTPS with the given certificate, HTTP redirected, the gateway's health
// endpoint checked, and JWT verification when an IdP is configured.
import { Match } from 'aws-cdk-lib/assertions';
import { CERTIFICATE, container, envOf, logicalId, resourcesOf, secretNamesOf, synth, Synth } from './synth';

let s: Synth;
beforeAll(() => {
  s = synth();
});

test('HTTPS on 443 with the certificate from context and a TLS 1.2+ policy', () => {
  s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
    Port: 443,
    Protocol: 'HTTPS',
    Certificates: [{ CertificateArn: CERTIFICATE }],
    SslPolicy: Match.stringLikeRegexp('^ELBSecurityPolicy-TLS13-1-2-'),
    DefaultActions: [Match.objectLike({ Type: 'forward' })],
  });
});

test('HTTP on 80 only redirects to HTTPS', () => {
  s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
    Port: 80,
    Protocol: 'HTTP',
    DefaultActions: [{ Type: 'redirect', RedirectConfig: { Protocol: 'HTTPS', Port: '443', StatusCode: 'HTTP_301' } }],
  });
  s.template.resourceCountIs('AWS::ElasticLoadBalancingV2::Listener', 2);
});

test('the ALB checks the gateway\'s liveness at /api/v1/health/live on 8080', () => {
  s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', {
    Port: 8080,
    Protocol: 'HTTP',
    TargetType: 'ip',
    HealthCheckPath: '/api/v1/health/live',
    Matcher: { HttpCode: '200' },
  });
  s.template.hasResourceProperties('AWS::ECS::Service', {
    ServiceName: 'gateway',
    LoadBalancers: [Match.objectLike({ ContainerName: 'gateway', ContainerPort: 8080 })],
  });
});

test('the Prometheus endpoint is not reachable through the ALB', () => {
  s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::ListenerRule', {
    Conditions: [{ Field: 'path-pattern', PathPatternConfig: { Values: ['/metrics', '/metrics/*'] } }],
    Actions: [Match.objectLike({ Type: 'fixed-response', FixedResponseConfig: Match.objectLike({ StatusCode: '404' }) })],
  });
});

test('the ALB is internet-facing, logs access, drops invalid headers and resists deletion', () => {
  const attributes = resourcesOf(s, 'AWS::ElasticLoadBalancingV2::LoadBalancer')[0][1].Properties!.LoadBalancerAttributes as { Key: string; Value: string }[];
  const attr = Object.fromEntries(attributes.map((a) => [a.Key, a.Value]));
  expect(attr['access_logs.s3.enabled']).toBe('true');
  expect(attr['routing.http.drop_invalid_header_fields.enabled']).toBe('true');
  expect(attr['deletion_protection.enabled']).toBe('true');
  s.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::LoadBalancer', { Scheme: 'internet-facing' });
});

test('the gateway verifies JWTs with an HMAC key from Secrets Manager by default', () => {
  const gateway = container(s, 'tributary-gateway', 'gateway');
  expect(secretNamesOf(gateway)).toContain('TRIBUTARY_GATEWAY__JWT_SECRET');
  expect(Object.keys(envOf(gateway)).filter((n) => n.includes('JWT'))).toEqual([]);
  s.template.hasResourceProperties('AWS::SecretsManager::Secret', {
    Name: 'tributary/gateway-jwt',
    GenerateSecretString: Match.objectLike({ GenerateStringKey: 'secret', PasswordLength: 64 }),
  });
  expect(s.annotations.findWarning('*', Match.stringLikeRegexp('without a token'))).toHaveLength(0);
});

test('issuer and audience go to the gateway as plain settings', () => {
  const t = synth({ jwtIssuer: 'https://idp.example.com/', jwtAudience: 'tributary-api' });
  expect(envOf(container(t, 'tributary-gateway', 'gateway'))).toMatchObject({
    TRIBUTARY_GATEWAY__JWT_ISSUER: 'https://idp.example.com/',
    TRIBUTARY_GATEWAY__JWT_AUDIENCE: 'tributary-api',
  });
});

test('with gatewayJwt=off and no JWKS the API is open, and synth warns about it', () => {
  const quiet = jest.spyOn(console, 'error').mockImplementation(() => undefined);
  const open = synth({ gatewayJwt: 'off' }, true);
  quiet.mockRestore();
  open.annotations.hasWarning('/Tributary/Gateway', Match.stringLikeRegexp('accepts requests without a token'));
  expect(secretNamesOf(container(open, 'tributary-gateway', 'gateway')).filter((n) => n.includes('JWT'))).toEqual([]);
  open.template.resourcePropertiesCountIs('AWS::SecretsManager::Secret', { Name: 'tributary/gateway-jwt' }, 0);
});

test('with an IdP the ALB verifies the JWT against its JWKS before forwarding, the gateway with its key', () => {
  const pem = '-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----';
  const jwt = synth({
    gatewayJwt: 'public-key',
    jwtPublicKey: pem,
    jwtIssuer: 'https://idp.example.com/',
    jwtAudience: 'tributary',
    jwksEndpoint: 'https://idp.example.com/.well-known/jwks.json',
  });
  const targets = logicalId(jwt, 'AWS::ElasticLoadBalancingV2::TargetGroup', 'GatewayTargets');
  jwt.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::Listener', {
    Port: 443,
    DefaultActions: [
      { Type: 'jwt-validation', Order: 1, JwtValidationConfig: { Issuer: 'https://idp.example.com/', JwksEndpoint: 'https://idp.example.com/.well-known/jwks.json' } },
      { Type: 'forward', Order: 2, TargetGroupArn: { Ref: targets } },
    ],
  });
  expect(envOf(container(jwt, 'tributary-gateway', 'gateway'))).toMatchObject({
    TRIBUTARY_GATEWAY__JWT_PUBLIC_KEY: pem,
    TRIBUTARY_GATEWAY__JWT_ISSUER: 'https://idp.example.com/',
  });
  // The health check path stays reachable for the ALB: it checks targets directly.
  jwt.template.hasResourceProperties('AWS::ElasticLoadBalancingV2::TargetGroup', { HealthCheckPath: '/api/v1/health/live' });
});

test('the gateway scales on CPU between gatewayCount and gatewayMaxCount', () => {
  s.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', {
    ServiceNamespace: 'ecs',
    MinCapacity: 2,
    MaxCapacity: 6,
  });
  s.template.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', {
    TargetTrackingScalingPolicyConfiguration: Match.objectLike({
      PredefinedMetricSpecification: { PredefinedMetricType: 'ECSServiceAverageCPUUtilization' },
      TargetValue: 60,
    }),
  });
});

test('synth refuses to run without a certificate', () => {
  expect(() => synth({ certificateArn: '' })).toThrow(/certificateArn is required/);
});

test('nothing that replaces a task or drops a target follows readiness, which is 503 during a Kafka outage', () => {
  for (const tg of Object.values(s.template.findResources('AWS::ElasticLoadBalancingV2::TargetGroup'))) {
    expect(tg.Properties.HealthCheckPath).toBe('/api/v1/health/live');
  }
  const check = container(s, 'tributary-gateway', 'gateway').HealthCheck!.Command.join(' ');
  expect(check).toContain('GET /api/v1/health/live HTTP/1.0');
});

test('the gateway keeps idle connections longer than the ALB does, so the ALB never reuses a closing one', () => {
  const albIdle = Object.values(s.template.findResources('AWS::ElasticLoadBalancingV2::LoadBalancer'))[0].Properties
    .LoadBalancerAttributes.find((a: { Key: string }) => a.Key === 'idle_timeout.timeout_seconds').Value;
  const headerMs = Number(envOf(container(s, 'tributary-gateway', 'gateway')).TRIBUTARY_GATEWAY__HEADER_TIMEOUT_MS);
  expect(headerMs).toBeGreaterThan(Number(albIdle) * 1000);
});

test('the gateway trusts X-Forwarded-For only because nothing but the ALB can reach it', () => {
  const env = envOf(container(s, 'tributary-gateway', 'gateway'));
  expect(env.TRIBUTARY_GATEWAY__RATE_LIMIT__TRUST_FORWARDED_FOR).toBe('true');
  const ingress = Object.values(s.template.findResources('AWS::EC2::SecurityGroupIngress'))
    .map((r) => r.Properties)
    .filter((p) => p.FromPort === 8080);
  expect(ingress.length).toBeGreaterThan(0);
  for (const rule of ingress) {
    expect(rule.CidrIp).toBeUndefined();
    expect(rule.SourceSecurityGroupId).toBeDefined();
  }
});
