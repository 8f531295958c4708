// Checkov findings accepted on purpose are recorded on the resource they concern, as CloudFormation
// metadata that checkov reads (Metadata.checkov.skip[].{id, comment}), so each one carries its
// reason next to the resource instead of in a global list. infra/test.sh prints them.
import { CfnResource } from 'aws-cdk-lib';
import { IConstruct } from 'constructs';

interface Skip {
  readonly id: string;
  readonly comment: string;
}

/** Skips the given checkov checks on a construct's CloudFormation resource, each with its reason. */
export function skipChecks(construct: IConstruct, reasons: Record<string, string>): void {
  const resource = construct instanceof CfnResource ? construct : construct.node.defaultChild;
  if (!(resource instanceof CfnResource)) {
    throw new Error(`${construct.node.path} has no CloudFormation resource to put checkov skips on`);
  }
  const existing = (resource.getMetadata('checkov') as { skip?: Skip[] } | undefined)?.skip ?? [];
  const added = Object.entries(reasons).map(([id, comment]) => ({ id, comment }));
  resource.addMetadata('checkov', { skip: [...existing, ...added] });
}
