/** The upstream topic templates of `upstream.topic` and `upstream.eventsTopic`. */
export interface TopicTemplates {
  gateway: string
  /** e.g. `sluice/{gateway}/{topic}`; `{topic}` is the sensor's topic */
  topic: string
  /** e.g. `sluice/{gateway}/$sluice/{kind}`; kind is gap | epoch | batch | health */
  eventsTopic: string
}

export type EventKind = 'gap' | 'epoch' | 'batch' | 'health'

export function readingTopic (t: TopicTemplates, sensorTopic: string): string {
  return t.topic.replaceAll('{gateway}', t.gateway).replaceAll('{topic}', sensorTopic)
}

/**
 * readingTopic with the template taken apart once: the same result, without scanning the
 * template twice for every reading (it runs once per reading forwarded).
 */
export function readingTopicOf (t: TopicTemplates): (sensorTopic: string) => string {
  const parts = t.topic.replaceAll('{gateway}', t.gateway).split('{topic}')
  if (parts.length === 2) {
    const [before, after] = parts
    return (sensorTopic) => before + sensorTopic + after
  }
  return (sensorTopic) => parts.join(sensorTopic)
}

export function eventTopic (t: TopicTemplates, kind: EventKind): string {
  return t.eventsTopic.replaceAll('{gateway}', t.gateway).replaceAll('{kind}', kind)
}
