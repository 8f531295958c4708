// The app's parameters: every CDK context key Tributary reads, with its default, parsed and
// checked once here so that the constructs only see typed values. Set them with
// `-c key=value` on the command line (values arrive as text) or in cdk.json / cdk.context.json.
// docs/aws.md lists them for users; keep the two in step.

export interface TributaryConfig {
  /** Prefix of resource names (MSK cluster, ECS cluster, secrets, log groups, DNS namespace). */
  readonly name: string;
  readonly account?: string;
  readonly region: string;
  /**
   * Zones named explicitly; unset, the first three zones of the region at deploy time
   * (Fn::GetAZs). Either way synth never looks them up in the account (offline, deterministic).
   */
  readonly availabilityZones?: string[];
  /** ACM certificate of the public HTTPS listener. */
  readonly certificateArn: string;
  /** Source ranges allowed to reach the ALB on 80 and 443. */
  readonly ingressCidrs: string[];
  /**
   * How the gateway itself checks bearer JWTs ([gateway] jwt_*, docs/api.md#authentication):
   * `hmac` (a secret generated in Secrets Manager verifies HS256/384/512 tokens), `public-key`
   * (the PEM in `jwtPublicKey` verifies the IdP's RS/ES/EdDSA tokens) or `off`.
   */
  readonly gatewayJwt: 'hmac' | 'public-key' | 'off';
  /** The IdP's public key in PEM, for `gatewayJwt=public-key` (public: a plain variable). */
  readonly jwtPublicKey?: string;
  /** The `iss` tokens must carry (gateway and ALB), and the `aud` (gateway). */
  readonly jwtIssuer?: string;
  readonly jwtAudience?: string;
  /** The IdP's JWKS URL: the ALB then verifies tokens before forwarding (needs jwtIssuer). */
  readonly jwksEndpoint?: string;
  readonly vpcCidr: string;
  readonly natGateways: number;
  readonly kafkaVersion: string;
  readonly brokerInstanceType: string;
  readonly brokerCount: number;
  readonly brokerVolumeGiB: number;
  readonly brokerVolumeMaxGiB: number;
  readonly imageTag: string;
  readonly gatewayCount: number;
  readonly gatewayMaxCount: number;
  readonly gatewayCpu: number;
  readonly gatewayMemoryMiB: number;
  readonly registryCount: number;
  readonly registryCpu: number;
  readonly registryMemoryMiB: number;
  readonly processorInstances: number;
  readonly processorCpu: number;
  readonly processorMemoryMiB: number;
  readonly connectCount: number;
  readonly connectCpu: number;
  readonly connectMemoryMiB: number;
  readonly connectHeapMiB: number;
  readonly logRetentionDays: number;
  readonly archiveGlacierDays: number;
  readonly archiveExpireDays: number;
  readonly accessLogExpireDays: number;
  readonly alarmEmail?: string;
  /** The metrics collector's image (AWS Distro for OpenTelemetry, from ECR Public). */
  readonly collectorImage: string;
  /** An Amazon Managed Grafana workspace on the AMP workspace (observability.ts). */
  readonly managedGrafana: boolean;
  /** Keep the ALB from being deleted by accident (turn off before `cdk destroy`). */
  readonly deletionProtection: boolean;
  /**
   * The GitHub repository (`owner/name`) whose release workflow may push the images and deploy
   * (images.ts, .github/workflows/release.yml); unset, no role for it exists.
   */
  readonly githubRepository?: string;
  /**
   * An existing IAM OIDC provider for token.actions.githubusercontent.com to trust: an account
   * has at most one per issuer. Unset (with githubRepository), the images stack creates it.
   */
  readonly githubOidcProviderArn?: string;
}

/** Defaults, as text, exactly as a `-c` flag would give them. */
export const DEFAULTS: Record<string, string> = {
  name: 'tributary',
  region: 'us-east-1',
  ingressCidrs: '0.0.0.0/0',
  gatewayJwt: 'hmac',
  vpcCidr: '10.40.0.0/16',
  natGateways: '3',
  kafkaVersion: '3.9.x',
  brokerInstanceType: 'kafka.m5.large',
  brokerCount: '3',
  brokerVolumeGiB: '1000',
  brokerVolumeMaxGiB: '4000',
  imageTag: '0.1.0',
  gatewayCount: '2',
  gatewayMaxCount: '6',
  gatewayCpu: '1024',
  gatewayMemoryMiB: '2048',
  registryCount: '2',
  registryCpu: '256',
  registryMemoryMiB: '512',
  processorInstances: '3',
  processorCpu: '1024',
  processorMemoryMiB: '2048',
  connectCount: '2',
  connectCpu: '2048',
  connectMemoryMiB: '4096',
  connectHeapMiB: '2048',
  logRetentionDays: '30',
  archiveGlacierDays: '30',
  archiveExpireDays: '365',
  accessLogExpireDays: '90',
  deletionProtection: 'true',
  collectorImage: 'public.ecr.aws/aws-observability/aws-otel-collector:v0.43.3',
  managedGrafana: 'false',
};

/** The retention periods CloudWatch Logs accepts, in days. */
const LOG_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

/** Fargate's allowed memory sizes (MiB) for each CPU size (units of 1/1024 vCPU). */
const FARGATE_MEMORY: Record<number, number[]> = {
  256: [512, 1024, 2048],
  512: range(1024, 4096, 1024),
  1024: range(2048, 8192, 1024),
  2048: range(4096, 16384, 1024),
  4096: range(8192, 30720, 1024),
};

function range(from: number, to: number, step: number): number[] {
  const out: number[] = [];
  for (let v = from; v <= to; v += step) out.push(v);
  return out;
}

/** Reads the context through `get` (for example `(k) => app.node.tryGetContext(k)`). */
export function readConfig(get: (key: string) => unknown, env: NodeJS.ProcessEnv = {}): TributaryConfig {
  const text = (key: string): string | undefined => {
    const v = get(key);
    if (v === undefined || v === null || v === '') return DEFAULTS[key];
    return String(v);
  };
  const required = (key: string, hint: string): string => {
    const v = text(key);
    if (!v) throw new Error(`context ${key} is required: ${hint}`);
    return v;
  };
  const int = (key: string, min: number, max: number): number => {
    const raw = text(key) ?? '';
    const n = Number(raw);
    if (!/^\d+$/.test(raw) || n < min || n > max) {
      throw new Error(`context ${key} must be an integer from ${min} to ${max}, got "${raw}"`);
    }
    return n;
  };
  const list = (key: string): string[] =>
    (text(key) ?? '').split(',').map((s) => s.trim()).filter((s) => s.length > 0);

  // The CLI's region (its profile or AWS_REGION) when -c region is not given, then us-east-1.
  const contextRegion = get('region');
  const region = contextRegion ? String(contextRegion) : (env.CDK_DEFAULT_REGION ?? DEFAULTS.region);
  const availabilityZones = get('availabilityZones') ? list('availabilityZones') : undefined;
  if (availabilityZones && availabilityZones.length !== 3) {
    throw new Error(`context availabilityZones must name 3 zones, got ${availabilityZones.length}`);
  }
  const name = text('name') ?? 'tributary';
  if (!/^[a-z][a-z0-9-]{1,30}$/.test(name)) {
    throw new Error(`context name must be lowercase letters, digits and dashes (2 to 31), got "${name}"`);
  }

  const cfg: TributaryConfig = {
    name,
    account: (get('account') as string | undefined) ?? env.CDK_DEFAULT_ACCOUNT,
    region,
    availabilityZones,
    certificateArn: required('certificateArn', 'pass -c certificateArn=arn:aws:acm:REGION:ACCOUNT:certificate/ID'),
    ingressCidrs: list('ingressCidrs'),
    gatewayJwt: (text('gatewayJwt') ?? 'hmac') as TributaryConfig['gatewayJwt'],
    jwtPublicKey: text('jwtPublicKey'),
    jwtIssuer: text('jwtIssuer'),
    jwtAudience: text('jwtAudience'),
    jwksEndpoint: text('jwksEndpoint'),
    vpcCidr: text('vpcCidr') ?? DEFAULTS.vpcCidr,
    natGateways: int('natGateways', 1, 3),
    kafkaVersion: text('kafkaVersion') ?? DEFAULTS.kafkaVersion,
    brokerInstanceType: text('brokerInstanceType') ?? DEFAULTS.brokerInstanceType,
    brokerCount: int('brokerCount', 3, 30),
    brokerVolumeGiB: int('brokerVolumeGiB', 1, 16384),
    brokerVolumeMaxGiB: int('brokerVolumeMaxGiB', 1, 16384),
    imageTag: text('imageTag') ?? DEFAULTS.imageTag,
    gatewayCount: int('gatewayCount', 1, 100),
    gatewayMaxCount: int('gatewayMaxCount', 1, 100),
    gatewayCpu: int('gatewayCpu', 256, 4096),
    gatewayMemoryMiB: int('gatewayMemoryMiB', 512, 30720),
    registryCount: int('registryCount', 1, 10),
    registryCpu: int('registryCpu', 256, 4096),
    registryMemoryMiB: int('registryMemoryMiB', 512, 30720),
    processorInstances: int('processorInstances', 1, 48),
    processorCpu: int('processorCpu', 256, 4096),
    processorMemoryMiB: int('processorMemoryMiB', 512, 30720),
    connectCount: int('connectCount', 1, 20),
    connectCpu: int('connectCpu', 256, 4096),
    connectMemoryMiB: int('connectMemoryMiB', 512, 30720),
    connectHeapMiB: int('connectHeapMiB', 256, 30720),
    logRetentionDays: int('logRetentionDays', 1, 3653),
    archiveGlacierDays: int('archiveGlacierDays', 1, 3650),
    archiveExpireDays: int('archiveExpireDays', 2, 36500),
    accessLogExpireDays: int('accessLogExpireDays', 1, 3650),
    alarmEmail: text('alarmEmail'),
    collectorImage: text('collectorImage') ?? DEFAULTS.collectorImage,
    managedGrafana: (text('managedGrafana') ?? 'false') === 'true',
    deletionProtection: (text('deletionProtection') ?? 'true') !== 'false',
    githubRepository: text('githubRepository'),
    githubOidcProviderArn: text('githubOidcProviderArn'),
  };

  if (cfg.brokerCount % 3 !== 0) throw new Error('context brokerCount must be a multiple of 3 (one per zone)');
  if (cfg.brokerVolumeMaxGiB < cfg.brokerVolumeGiB) throw new Error('context brokerVolumeMaxGiB is below brokerVolumeGiB');
  if (cfg.gatewayMaxCount < cfg.gatewayCount) throw new Error('context gatewayMaxCount is below gatewayCount');
  if (cfg.archiveExpireDays <= cfg.archiveGlacierDays) throw new Error('context archiveExpireDays must be after archiveGlacierDays');
  if (cfg.connectHeapMiB > cfg.connectMemoryMiB - 512) {
    throw new Error('context connectHeapMiB must leave at least 512 MiB of connectMemoryMiB to the Snowpipe Streaming SDK');
  }
  if (!['hmac', 'public-key', 'off'].includes(cfg.gatewayJwt)) {
    throw new Error(`context gatewayJwt must be hmac, public-key or off, got "${cfg.gatewayJwt}"`);
  }
  if ((cfg.gatewayJwt === 'public-key') !== !!cfg.jwtPublicKey) {
    throw new Error('context jwtPublicKey goes with gatewayJwt=public-key, and only with it');
  }
  if (cfg.gatewayJwt === 'public-key' && !(cfg.jwtIssuer && cfg.jwtAudience)) {
    throw new Error('context gatewayJwt=public-key needs jwtIssuer and jwtAudience (the gateway refuses to start without them)');
  }
  if (cfg.jwksEndpoint && !cfg.jwtIssuer) throw new Error('context jwksEndpoint needs jwtIssuer (the ALB checks both)');
  if (cfg.jwksEndpoint && cfg.gatewayJwt === 'hmac') {
    throw new Error('context jwksEndpoint: the IdP\'s tokens would fail the gateway\'s HMAC check; '
      + 'give the gateway the IdP\'s key (-c gatewayJwt=public-key -c jwtPublicKey=...) or turn its check off (-c gatewayJwt=off)');
  }
  if (cfg.ingressCidrs.length === 0) throw new Error('context ingressCidrs is empty');
  // The repository goes into a StringLike pattern of the release role's trust policy: only the
  // characters GitHub allows in names, so that no `*` or `?` can widen who may assume it.
  if (cfg.githubRepository && !/^[A-Za-z0-9][A-Za-z0-9-]{0,38}\/[A-Za-z0-9._-]{1,100}$/.test(cfg.githubRepository)) {
    throw new Error(`context githubRepository must be owner/name as GitHub spells it, got "${cfg.githubRepository}"`);
  }
  if (cfg.githubOidcProviderArn && !cfg.githubRepository) {
    throw new Error('context githubOidcProviderArn goes with githubRepository (it is the provider the release role trusts)');
  }
  if (cfg.githubOidcProviderArn
    && !/^arn:aws[a-z-]*:iam::\d{12}:oidc-provider\/token\.actions\.githubusercontent\.com$/.test(cfg.githubOidcProviderArn)) {
    throw new Error('context githubOidcProviderArn must be arn:aws:iam::ACCOUNT:oidc-provider/token.actions.githubusercontent.com, '
      + `got "${cfg.githubOidcProviderArn}"`);
  }
  if (!LOG_RETENTION_DAYS.includes(cfg.logRetentionDays)) {
    throw new Error(`context logRetentionDays must be one of CloudWatch's values: ${LOG_RETENTION_DAYS.join(', ')}`);
  }
  for (const service of ['gateway', 'registry', 'processor', 'connect'] as const) {
    const cpu = cfg[`${service}Cpu`];
    const mem = cfg[`${service}MemoryMiB`];
    if (!FARGATE_MEMORY[cpu]?.includes(mem)) {
      throw new Error(`context ${service}Cpu=${cpu} with ${service}MemoryMiB=${mem} is not a Fargate size`);
    }
  }
  return cfg;
}
